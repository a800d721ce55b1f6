/*
 * e_tcp_state: closed and connecting TCP sockets (run in a network
 * namespace of its own).
 *
 *   fd 50  a connect refused (reported by connect): closed, not bound
 *   fd 51  bound to 127.0.0.1:4001, then a connect refused: closed, the
 *          port still bound
 *   fd 52  a non-blocking connect in progress (SYN_SENT) to 10.99.0.1:80,
 *          routed to lo (from 10.99.0.9) where nobody answers, from an
 *          ephemeral port
 *   fd 53  the same, from 127.0.0.1:4003 bound explicitly, to 10.99.0.2:80
 *   fd 54  the port nobody listens on (bound, not listening)
 *   fd 55  a listener on 10.99.0.1:80 with IP_FREEBIND (the address is
 *          added after "go", so the SYNs of fd 52 reach it from then on)
 *
 * After "go": fds 50/51 closed, named 0.0.0.0:0 and 127.0.0.1:4001, no
 * pending error, and refused again on a new connect; fds 52/53 still
 * SYN_SENT from their ports; then fd 52 connects to 10.99.0.1:80 once the
 * address exists.
 */
#define _GNU_SOURCE
#include "case.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

static int at(int fd, int want)
{
	CHECK(fd >= 0, "socket: %s", strerror(errno));
	CHECK(dup2(fd, want) == want, "dup2: %s", strerror(errno));
	close(fd);
	return want;
}

static struct sockaddr_in addr(const char *a, int port)
{
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_port = htons(port) };

	inet_pton(AF_INET, a, &s.sin_addr);
	return s;
}

static int state(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof ti;

	CHECK(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0, "TCP_INFO: %s", strerror(errno));
	return ti.tcpi_state;
}

static void name_is(int fd, const char *a, int port)
{
	struct sockaddr_in s, want = addr(a, port);
	socklen_t l = sizeof s;

	CHECK(getsockname(fd, (struct sockaddr *)&s, &l) == 0, "getsockname: %s", strerror(errno));
	CHECK(s.sin_addr.s_addr == want.sin_addr.s_addr && (port < 0 || s.sin_port == want.sin_port),
	      "fd %d named %s:%d, want %s:%d", fd, inet_ntoa(s.sin_addr), ntohs(s.sin_port), a, port);
}

static int port_of(int fd)
{
	struct sockaddr_in s;
	socklen_t l = sizeof s;

	CHECK(getsockname(fd, (struct sockaddr *)&s, &l) == 0, "getsockname: %s", strerror(errno));
	return ntohs(s.sin_port);
}

static int so_error(int fd)
{
	int e = -1;
	socklen_t l = sizeof e;

	CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) == 0, "SO_ERROR: %s", strerror(errno));
	return e;
}

int main(int argc, char **argv)
{
	struct sockaddr_in hole = addr("127.0.0.1", 4009), s, d1 = addr("10.99.0.1", 80), d2 = addr("10.99.0.2", 80);
	struct sockaddr_in b51 = addr("127.0.0.1", 4001), b53 = addr("127.0.0.1", 4003);
	struct pollfd p = { .fd = 52, .events = POLLOUT };
	int one = 1, port52, t;
	socklen_t l;

	case_init(argc, argv);
	CHECK(system("ip addr add 10.99.0.9/32 dev lo && ip route add 10.99.0.0/24 dev lo src 10.99.0.9") == 0, "ip route add failed");
	at(socket(AF_INET, SOCK_STREAM, 0), 54);
	CHECK(bind(54, (struct sockaddr *)&hole, sizeof hole) == 0, "bind hole: %s", strerror(errno));

	at(socket(AF_INET, SOCK_STREAM, 0), 50);
	CHECK(connect(50, (struct sockaddr *)&hole, sizeof hole) == -1 && errno == ECONNREFUSED, "connect fd 50: %s", strerror(errno));
	at(socket(AF_INET, SOCK_STREAM, 0), 51);
	CHECK(bind(51, (struct sockaddr *)&b51, sizeof b51) == 0, "bind fd 51: %s", strerror(errno));
	CHECK(connect(51, (struct sockaddr *)&hole, sizeof hole) == -1 && errno == ECONNREFUSED, "connect fd 51: %s", strerror(errno));

	at(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), 52);
	CHECK(connect(52, (struct sockaddr *)&d1, sizeof d1) == -1 && errno == EINPROGRESS, "connect fd 52: %s", strerror(errno));
	port52 = port_of(52);
	at(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), 53);
	CHECK(bind(53, (struct sockaddr *)&b53, sizeof b53) == 0, "bind fd 53: %s", strerror(errno));
	CHECK(connect(53, (struct sockaddr *)&d2, sizeof d2) == -1 && errno == EINPROGRESS, "connect fd 53: %s", strerror(errno));

	at(socket(AF_INET, SOCK_STREAM, 0), 55);
	CHECK(setsockopt(55, SOL_IP, IP_FREEBIND, &one, sizeof one) == 0, "IP_FREEBIND: %s", strerror(errno));
	CHECK(bind(55, (struct sockaddr *)&d1, sizeof d1) == 0, "bind fd 55: %s", strerror(errno));
	CHECK(listen(55, 4) == 0, "listen: %s", strerror(errno));
	CHECK(state(52) == 2 && state(53) == 2, "not SYN_SENT: %d %d", state(52), state(53));
	case_log("fd 52 connecting from port %d", port52);

	case_ready();
	case_wait_go();

	CHECK(state(50) == 7 && state(51) == 7, "fds 50/51 in states %d %d, want CLOSE", state(50), state(51));
	name_is(50, "0.0.0.0", -1); /* the port: 0, or the one the failed connect gave back */
	name_is(51, "127.0.0.1", 4001);
	CHECK(so_error(50) == 0 && so_error(51) == 0, "a pending error appeared");
	t = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(bind(t, (struct sockaddr *)&b51, sizeof b51) == -1 && errno == EADDRINUSE, "port 4001 not held by fd 51 (%s)", strerror(errno));
	close(t);
	CHECK(connect(50, (struct sockaddr *)&hole, sizeof hole) == -1 && errno == ECONNREFUSED, "connect fd 50 again: %s", strerror(errno));
	CHECK(connect(51, (struct sockaddr *)&hole, sizeof hole) == -1 && errno == ECONNREFUSED, "connect fd 51 again: %s", strerror(errno));
	name_is(51, "127.0.0.1", 4001);

	CHECK(state(52) == 2 && state(53) == 2, "not SYN_SENT after restore: %d %d", state(52), state(53));
	CHECK(port_of(52) == port52, "fd 52 connecting from port %d, was %d", port_of(52), port52);
	name_is(53, "127.0.0.1", 4003);
	CHECK(fcntl(52, F_GETFL) & O_NONBLOCK, "fd 52 lost O_NONBLOCK");
	/* a second connect call still reports the one in progress */
	CHECK(connect(52, (struct sockaddr *)&d1, sizeof d1) == -1 && errno == EALREADY, "connect fd 52 again: %s", strerror(errno));

	CHECK(system("ip addr add 10.99.0.1/32 dev lo") == 0, "ip addr add failed");
	CHECK(poll(&p, 1, 10000) == 1, "fd 52 never connected");
	CHECK(so_error(52) == 0, "fd 52: connect failed: %s", strerror(so_error(52)));
	l = sizeof s;
	CHECK(getpeername(52, (struct sockaddr *)&s, &l) == 0 && s.sin_addr.s_addr == d1.sin_addr.s_addr && s.sin_port == d1.sin_port,
	      "fd 52 connected to another peer");
	case_pass();
	return 0;
}

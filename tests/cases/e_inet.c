/*
 * e_inet: inet sockets that are not established connections survive C/R.
 *
 *   fd 50  TCP listener on 127.0.0.1, port chosen by the kernel, backlog 9,
 *          SO_REUSEADDR, SO_KEEPALIVE with TCP_KEEPIDLE/INTVL/CNT,
 *          TCP_NODELAY, O_NONBLOCK
 *   fd 51  TCP listener on [::1] with IPV6_V6ONLY, SO_RCVBUF, SO_RCVTIMEO
 *   fd 52  UDP socket bound on 127.0.0.1 (kernel port), SO_SNDBUF
 *   fd 53  unbound TCP socket with SO_KEEPALIVE
 *
 * The ports are recorded before "ready". After "go", from inside: same
 * ports and options (getsockopt), both listeners accept a connection made
 * here and carry data both ways, the UDP socket receives a datagram sent
 * to its port, and the unbound socket can still connect.
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

#define L4 50
#define L6 51
#define U4 52
#define T4 53

static void setint(int fd, int level, int opt, int v, const char *name)
{
	CHECK(setsockopt(fd, level, opt, &v, sizeof v) == 0, "setsockopt %s: %s", name, strerror(errno));
}

static int getint(int fd, int level, int opt, const char *name)
{
	int v = -1;
	socklen_t l = sizeof v;

	CHECK(getsockopt(fd, level, opt, &v, &l) == 0, "getsockopt %s on fd %d: %s", name, fd, strerror(errno));
	return v;
}

static int at(int fd, int want)
{
	CHECK(fd >= 0, "socket: %s", strerror(errno));
	CHECK(dup2(fd, want) == want, "dup2: %s", strerror(errno));
	close(fd);
	return want;
}

static int port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof ss;

	CHECK(getsockname(fd, (struct sockaddr *)&ss, &l) == 0, "getsockname fd %d: %s", fd, strerror(errno));
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* talk connects to the listener lfd (loopback of family, port), accepts
 * and sends data both ways. */
static void talk(int lfd, int family, int port)
{
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	char buf[16];
	int c = socket(family, SOCK_STREAM, 0), s;

	a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a6.sin6_addr = in6addr_loopback;
	CHECK(c >= 0, "socket: %s", strerror(errno));
	if (family == AF_INET)
		CHECK(connect(c, (struct sockaddr *)&a4, sizeof a4) == 0, "connect 127.0.0.1:%d: %s", port, strerror(errno));
	else
		CHECK(connect(c, (struct sockaddr *)&a6, sizeof a6) == 0, "connect [::1]:%d: %s", port, strerror(errno));
	CHECK(poll(&p, 1, 5000) == 1, "listener fd %d: no connection to accept", lfd);
	s = accept(lfd, NULL, NULL);
	CHECK(s >= 0, "accept on fd %d: %s", lfd, strerror(errno));
	CHECK(write(c, "ping", 4) == 4 && read(s, buf, sizeof buf) == 4 && !memcmp(buf, "ping", 4), "fd %d: client -> server", lfd);
	CHECK(write(s, "pong", 4) == 4 && read(c, buf, sizeof buf) == 4 && !memcmp(buf, "pong", 4), "fd %d: server -> client", lfd);
	close(c);
	close(s);
}

int main(int argc, char **argv)
{
	struct sockaddr_in a4 = { .sin_family = AF_INET };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6 };
	struct timeval tv = { 2, 250000 }, tv1, tv2;
	socklen_t l;
	int p4, p6, pu, rcvbuf, sndbuf;
	char buf[16];

	case_init(argc, argv);
	a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a6.sin6_addr = in6addr_loopback;

	at(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), L4);
	setint(L4, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
	setint(L4, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
	setint(L4, IPPROTO_TCP, TCP_KEEPIDLE, 77, "TCP_KEEPIDLE");
	setint(L4, IPPROTO_TCP, TCP_KEEPINTVL, 11, "TCP_KEEPINTVL");
	setint(L4, IPPROTO_TCP, TCP_KEEPCNT, 5, "TCP_KEEPCNT");
	setint(L4, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
	CHECK(bind(L4, (struct sockaddr *)&a4, sizeof a4) == 0, "bind 127.0.0.1:0: %s", strerror(errno));
	CHECK(listen(L4, 9) == 0, "listen: %s", strerror(errno));

	at(socket(AF_INET6, SOCK_STREAM, 0), L6);
	setint(L6, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
	setint(L6, SOL_SOCKET, SO_RCVBUF, 200000, "SO_RCVBUF");
	CHECK(setsockopt(L6, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0, "SO_RCVTIMEO: %s", strerror(errno));
	CHECK(bind(L6, (struct sockaddr *)&a6, sizeof a6) == 0, "bind [::1]:0: %s", strerror(errno));
	CHECK(listen(L6, 3) == 0, "listen: %s", strerror(errno));

	at(socket(AF_INET, SOCK_DGRAM, 0), U4);
	setint(U4, SOL_SOCKET, SO_SNDBUF, 65536, "SO_SNDBUF");
	CHECK(bind(U4, (struct sockaddr *)&a4, sizeof a4) == 0, "bind udp 127.0.0.1:0: %s", strerror(errno));

	at(socket(AF_INET, SOCK_STREAM, 0), T4);
	setint(T4, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");

	p4 = port_of(L4), p6 = port_of(L6), pu = port_of(U4);
	rcvbuf = getint(L6, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF");
	sndbuf = getint(U4, SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF");
	/* read back in the kernel's granularity (jiffies) */
	l = sizeof tv1;
	CHECK(getsockopt(L6, SOL_SOCKET, SO_RCVTIMEO, &tv1, &l) == 0, "SO_RCVTIMEO: %s", strerror(errno));
	case_log("tcp 127.0.0.1:%d on fd %d, tcp6 [::1]:%d on fd %d, udp 127.0.0.1:%d on fd %d, unbound tcp on fd %d",
		 p4, L4, p6, L6, pu, U4, T4);

	case_ready();
	case_wait_go();

	CHECK(port_of(L4) == p4, "fd %d: port %d, was %d", L4, port_of(L4), p4);
	CHECK(port_of(L6) == p6, "fd %d: port %d, was %d", L6, port_of(L6), p6);
	CHECK(port_of(U4) == pu, "fd %d: port %d, was %d", U4, port_of(U4), pu);
	CHECK(port_of(T4) == 0, "fd %d: unbound socket has port %d", T4, port_of(T4));
	CHECK(getint(L4, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN") == 1, "fd %d not listening", L4);
	CHECK(getint(L6, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN") == 1, "fd %d not listening", L6);
	CHECK(getint(L4, SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR") == 1, "SO_REUSEADDR lost");
	CHECK(getint(L4, SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE") == 1, "SO_KEEPALIVE lost");
	CHECK(getint(L4, IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE") == 77, "TCP_KEEPIDLE lost");
	CHECK(getint(L4, IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL") == 11, "TCP_KEEPINTVL lost");
	CHECK(getint(L4, IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT") == 5, "TCP_KEEPCNT lost");
	CHECK(getint(L4, IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY") == 1, "TCP_NODELAY lost");
	CHECK(fcntl(L4, F_GETFL) & O_NONBLOCK, "O_NONBLOCK lost on fd %d", L4);
	CHECK(!(fcntl(L6, F_GETFL) & O_NONBLOCK), "O_NONBLOCK appeared on fd %d", L6);
	CHECK(getint(L6, IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY") == 1, "IPV6_V6ONLY lost");
	CHECK(getint(L6, SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR") == 0, "SO_REUSEADDR appeared on fd %d", L6);
	CHECK(getint(L6, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF") == rcvbuf, "SO_RCVBUF %d, was %d",
	      getint(L6, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"), rcvbuf);
	l = sizeof tv2;
	CHECK(getsockopt(L6, SOL_SOCKET, SO_RCVTIMEO, &tv2, &l) == 0 && tv2.tv_sec == tv1.tv_sec && tv2.tv_usec == tv1.tv_usec,
	      "SO_RCVTIMEO %ld.%06ld, was %ld.%06ld", (long)tv2.tv_sec, (long)tv2.tv_usec, (long)tv1.tv_sec, (long)tv1.tv_usec);
	CHECK(getint(U4, SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF") == sndbuf, "SO_SNDBUF %d, was %d",
	      getint(U4, SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"), sndbuf);
	CHECK(getint(T4, SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE") == 1, "SO_KEEPALIVE lost on fd %d", T4);
	CHECK(getint(T4, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN") == 0, "fd %d listening", T4);

	talk(L4, AF_INET, p4);
	talk(L6, AF_INET6, p6);

	/* a datagram sent to the UDP socket's port arrives */
	{
		int c = socket(AF_INET, SOCK_DGRAM, 0);
		struct pollfd p = { .fd = U4, .events = POLLIN };

		a4.sin_port = htons(pu);
		CHECK(c >= 0 && sendto(c, "dgram", 5, 0, (struct sockaddr *)&a4, sizeof a4) == 5, "sendto udp: %s", strerror(errno));
		CHECK(poll(&p, 1, 5000) == 1, "no datagram on fd %d", U4);
		CHECK(recv(U4, buf, sizeof buf, 0) == 5 && !memcmp(buf, "dgram", 5), "wrong datagram");
		close(c);
	}

	/* the unbound socket is still a fresh socket: it connects */
	{
		struct pollfd p = { .fd = L4, .events = POLLIN };
		int s;

		a4.sin_port = htons(p4);
		CHECK(connect(T4, (struct sockaddr *)&a4, sizeof a4) == 0, "connect fd %d: %s", T4, strerror(errno));
		CHECK(poll(&p, 1, 5000) == 1, "no connection from fd %d", T4);
		s = accept(L4, NULL, NULL);
		CHECK(s >= 0, "accept: %s", strerror(errno));
		CHECK(write(T4, "x", 1) == 1 && read(s, buf, 1) == 1 && buf[0] == 'x', "fd %d: no data", T4);
		close(s);
	}
	case_pass();
}

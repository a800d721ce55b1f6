/*
 * e_inet_bind: bindings that used to fail at restore (run in a network
 * namespace of its own).
 *
 *   fd 50, 51  two TCP listeners on the same 127.0.0.1 port (SO_REUSEPORT)
 *   fd 52, 53  two UDP sockets on the same 127.0.0.1 port (SO_REUSEPORT)
 *   fd 54      TCP listener with IP_FREEBIND on 10.99.99.99, an address
 *              of no interface
 *   fd 55      UDP [2001:db8::99] with IPV6_FREEBIND (no such address)
 *   fd 56      TCP socket with IP_TRANSPARENT bound to 10.99.99.98
 *   fd 57      (in a child) a third TCP listener of the fd 50/51 group
 *              (it accepts and tells the parent through a pipe)
 *
 * With -DEST also: an established connection on the group's port (fds
 * 60, 61), a dual-stack reuseport pair (fds 62, 63) and a socket bound to
 * the group's port without listening (fd 64).
 * With -DGONE, fd 58 is a UDP socket bound to 10.77.0.1, an address the
 * test removes before each dump (so it is absent at restore).
 * With -DNONROOT it runs as uid 1000 (IP_FREEBIND instead of
 * IP_TRANSPARENT on fd 56).
 *
 * After "go": the same names and options, the reuseport listeners both
 * listening and a connection to the port accepted by one of the three.
 */
#define _GNU_SOURCE
#include "case.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

static int getint(int fd, int level, int opt, const char *name)
{
	int v = -1;
	socklen_t l = sizeof v;

	CHECK(getsockopt(fd, level, opt, &v, &l) == 0, "getsockopt %s on fd %d: %s", name, fd, strerror(errno));
	return v;
}

static void setint(int fd, int level, int opt, int v, const char *name)
{
	CHECK(setsockopt(fd, level, opt, &v, sizeof v) == 0, "setsockopt %s on fd %d: %s", name, fd, strerror(errno));
}

static int at(int fd, int want)
{
	CHECK(fd >= 0, "socket: %s", strerror(errno));
	CHECK(dup2(fd, want) == want, "dup2: %s", strerror(errno));
	close(fd);
	return want;
}

static void bind_to(int fd, const char *addr, int port)
{
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };

	if (strchr(addr, ':')) {
		inet_pton(AF_INET6, addr, &a6.sin6_addr);
		CHECK(bind(fd, (struct sockaddr *)&a6, sizeof a6) == 0, "bind fd %d [%s]:%d: %s", fd, addr, port, strerror(errno));
	} else {
		inet_pton(AF_INET, addr, &a4.sin_addr);
		CHECK(bind(fd, (struct sockaddr *)&a4, sizeof a4) == 0, "bind fd %d %s:%d: %s", fd, addr, port, strerror(errno));
	}
}

static struct sockaddr_storage names[7];

static void name_of(int fd, struct sockaddr_storage *ss)
{
	socklen_t l = sizeof *ss;

	memset(ss, 0, sizeof *ss);
	CHECK(getsockname(fd, (struct sockaddr *)ss, &l) == 0, "getsockname fd %d: %s", fd, strerror(errno));
}

static int port_of(int fd)
{
	struct sockaddr_in a;
	socklen_t l = sizeof a;

	CHECK(getsockname(fd, (struct sockaddr *)&a, &l) == 0, "getsockname: %s", strerror(errno));
	return ntohs(a.sin_port);
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	struct pollfd p[3] = { { .fd = 50, .events = POLLIN }, { .fd = 51, .events = POLLIN }, { .events = POLLIN } };
	int i, port, uport, c, s;

	case_init(argc, argv);
#ifdef NONROOT
	/* the sockets are owned by uid 1000 (a reuseport group needs one owner) */
	CHECK(setresgid(1000, 1000, 1000) == 0 && setresuid(1000, 1000, 1000) == 0, "drop ids: %s", strerror(errno));
#endif
#ifdef GONE
	/* fd 58: UDP bound to 10.77.0.1, an address the test removes before
	 * the dump (it is not there at restore) */
	CHECK(system("ip addr add 10.77.0.1/32 dev lo") == 0, "ip addr add failed");
	at(socket(AF_INET, SOCK_DGRAM, 0), 58);
	bind_to(58, "10.77.0.1", 4545);
	struct sockaddr_storage gone;
	name_of(58, &gone);
#endif
	at(socket(AF_INET, SOCK_STREAM, 0), 50);
	setint(50, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
	bind_to(50, "127.0.0.1", 0);
	port = port_of(50);
	CHECK(listen(50, 5) == 0, "listen: %s", strerror(errno));
	at(socket(AF_INET, SOCK_STREAM, 0), 51);
	setint(51, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
	bind_to(51, "127.0.0.1", port);
	CHECK(listen(51, 5) == 0, "listen: %s", strerror(errno));

#ifdef EST
	/* fd 64: bound into the group's port, not listening */
	at(socket(AF_INET, SOCK_STREAM, 0), 64);
	setint(64, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
	bind_to(64, "127.0.0.1", port);
#endif
	at(socket(AF_INET, SOCK_DGRAM, 0), 52);
	setint(52, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
	bind_to(52, "127.0.0.1", 0);
	uport = port_of(52);
	at(socket(AF_INET, SOCK_DGRAM, 0), 53);
	setint(53, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
	bind_to(53, "127.0.0.1", uport);

	at(socket(AF_INET, SOCK_STREAM, 0), 54);
	setint(54, SOL_IP, IP_FREEBIND, 1, "IP_FREEBIND");
	bind_to(54, "10.99.99.99", 4242);
	CHECK(listen(54, 5) == 0, "listen: %s", strerror(errno));
	at(socket(AF_INET6, SOCK_DGRAM, 0), 55);
	setint(55, SOL_IPV6, IPV6_FREEBIND, 1, "IPV6_FREEBIND");
	bind_to(55, "2001:db8::99", 4343);
	at(socket(AF_INET, SOCK_STREAM, 0), 56);
#ifdef NONROOT
	setint(56, SOL_IP, IP_FREEBIND, 1, "IP_FREEBIND"); /* IP_TRANSPARENT needs CAP_NET_ADMIN */
#else
	setint(56, SOL_IP, IP_TRANSPARENT, 1, "IP_TRANSPARENT");
#endif
	bind_to(56, "10.99.99.98", 4444);
	for (i = 0; i < 7; i++)
		name_of(50 + i, &names[i]);
#ifdef EST
	/* an established connection on the group's port (fds 60, 61) */
	{
		struct sockaddr_in la = { .sin_family = AF_INET, .sin_port = htons(port) };
		la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		at(socket(AF_INET, SOCK_STREAM, 0), 60);
		CHECK(connect(60, (struct sockaddr *)&la, sizeof la) == 0, "connect: %s", strerror(errno));
		struct pollfd q[2] = { { .fd = 50, .events = POLLIN }, { .fd = 51, .events = POLLIN } };
		CHECK(poll(q, 2, 3000) == 1, "no connection");
		at(accept(q[0].revents ? 50 : 51, NULL, NULL), 61);
	}
	/* dual-stack [::]:P6 and 0.0.0.0:P6 reuseport listeners (fds 62, 63) */
	{
		at(socket(AF_INET6, SOCK_STREAM, 0), 62);
		setint(62, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
		bind_to(62, "::", 0);
		CHECK(listen(62, 5) == 0, "listen: %s", strerror(errno));
		struct sockaddr_in6 a6; socklen_t l6 = sizeof a6;
		getsockname(62, (struct sockaddr *)&a6, &l6);
		at(socket(AF_INET, SOCK_STREAM, 0), 63);
		setint(63, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
		bind_to(63, "0.0.0.0", ntohs(a6.sin6_port));
		CHECK(listen(63, 5) == 0, "listen: %s", strerror(errno));
	}
#endif
	/* a child holds a third listener of the group, on fd 57 */
	int sync[2], child;
	char b;
	CHECK(pipe(sync) == 0, "pipe: %s", strerror(errno));
	child = fork();
	CHECK(child >= 0, "fork: %s", strerror(errno));
	if (child == 0) {
		for (i = 50; i <= 56; i++)
			close(i);
		at(socket(AF_INET, SOCK_STREAM, 0), 57);
		setint(57, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
		bind_to(57, "127.0.0.1", port);
		CHECK(listen(57, 5) == 0, "listen: %s", strerror(errno));
		CHECK(write(sync[1], "x", 1) == 1, "sync");
		for (;;) { /* accept, and tell the parent */
			int a = accept(57, NULL, NULL);

			if (a >= 0 && write(sync[1], "a", 1) == 1)
				close(a);
		}
	}
	CHECK(read(sync[0], &b, 1) == 1, "child did not start");

	case_ready();
	case_wait_go();

	for (i = 0; i < 7; i++) {
		struct sockaddr_storage ss;

		name_of(50 + i, &ss);
		CHECK(!memcmp(&ss, &names[i], sizeof ss), "fd %d: bound to another address", 50 + i);
	}
#ifdef GONE
	{
		struct sockaddr_storage ss;

		name_of(58, &ss);
		CHECK(!memcmp(&ss, &gone, sizeof ss), "fd 58: bound to another address");
		CHECK(getint(58, SOL_IP, IP_FREEBIND, "IP_FREEBIND") == 0, "fd 58: IP_FREEBIND left set");
	}
#endif
#ifdef EST
	CHECK(port_of(64) == port && !getint(64, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN"), "fd 64: port %d", port_of(64));
#endif
	for (i = 50; i <= 53; i++)
		CHECK(getint(i, SOL_SOCKET, SO_REUSEPORT, "SO_REUSEPORT") == 1, "fd %d: SO_REUSEPORT lost", i);
	CHECK(getint(50, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN") && getint(51, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN"),
	      "reuseport listeners not listening");
	CHECK(getint(54, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN"), "freebind listener not listening");
	CHECK(getint(54, SOL_IP, IP_FREEBIND, "IP_FREEBIND") == 1, "IP_FREEBIND lost");
	CHECK(getint(55, SOL_IPV6, IPV6_FREEBIND, "IPV6_FREEBIND") == 1, "IPV6_FREEBIND lost");
#ifndef NONROOT
	CHECK(getint(56, SOL_IP, IP_TRANSPARENT, "IP_TRANSPARENT") == 1, "IP_TRANSPARENT lost");
#endif

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons(port);
	c = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == 0, "connect to the reuseport port %d: %s", port, strerror(errno));
	p[2].fd = sync[0];
	CHECK(poll(p, 3, 3000) == 1, "no listener has the connection");
	if (!p[2].revents) {
		s = accept(p[0].revents ? 50 : 51, NULL, NULL);
		CHECK(s >= 0, "accept: %s", strerror(errno));
		close(s);
	}
	close(c);
	kill(child, SIGKILL);
	case_pass();
	return 0;
}

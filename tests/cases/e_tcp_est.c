/*
 * e_tcp_est: established TCP connections, both ends in this process, in a
 * network namespace of their own (the harness dumps with
 * --tcp-established).
 *
 *  A (IPv4, 127.0.0.1): client fd 60, accepted end fd 61, listener fd 59
 *    still listening on the same port. The accepted end has a small
 *    receive buffer and the client wrote until EAGAIN: the server's
 *    receive queue is full and the client's send queue holds data in
 *    flight and data never sent (zero window). The server wrote 12 bytes
 *    the client has not read. The client has TCP_NODELAY, SO_KEEPALIVE
 *    with its intervals, SO_SNDBUF and SO_RCVTIMEO set.
 *  B (IPv6, ::1): client fd 62, accepted end fd 63. The client wrote
 *    "bye" and shut down writing (client FIN_WAIT2, server CLOSE_WAIT
 *    with "bye" unread).
 *
 * After go: every byte the client wrote arrives once and in order at the
 * server, then 4 MiB more of the same sequence; the client reads the 12
 * bytes; the options are back; B's server reads "bye" then end of file,
 * still writes to the client, and its close reaches the client as end of
 * file.
 */
#define _GNU_SOURCE
#include "case.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <sys/socket.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#define LISTENER 59
#define ACLIENT 60
#define ASERVER 61
#define BCLIENT 62
#define BSERVER 63

static unsigned char pat(unsigned long i) { return (unsigned char)(i * 7 + (i >> 9)); }

static void put(int fd, int at)
{
	CHECK(dup2(fd, at) == at, "dup2 %d: %s", at, strerror(errno));
	close(fd);
}

static int getint(int fd, int level, int opt)
{
	int v = -1;
	socklen_t l = sizeof v;

	CHECK(getsockopt(fd, level, opt, &v, &l) == 0, "getsockopt %d/%d: %s", level, opt, strerror(errno));
	return v;
}

/* read exactly n bytes of the pattern starting at *off from fd */
static void expect_pattern(int fd, unsigned long *off, unsigned long n)
{
	unsigned char buf[65536];

	while (n > 0) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t got;

		CHECK(poll(&p, 1, 10000) == 1, "server: no data after %lu bytes", *off);
		got = read(fd, buf, n < sizeof buf ? n : sizeof buf);
		CHECK(got > 0, "server: read at %lu: %s", *off, got == 0 ? "end of file" : strerror(errno));
		for (ssize_t i = 0; i < got; i++)
			CHECK(buf[i] == pat(*off + i), "server: byte %lu is %d, want %d", *off + i, buf[i], pat(*off + i));
		*off += got;
		n -= got;
	}
}

static void setup_a(unsigned long *sent)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t l = sizeof a;
	int one = 1, ls, c, s, v;
	unsigned char buf[4096];
	struct timeval tv = { 3, 500000 };

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ls = socket(AF_INET, SOCK_STREAM, 0);
	v = 4096;
	CHECK(ls >= 0 && setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
		      setsockopt(ls, SOL_SOCKET, SO_RCVBUF, &v, sizeof v) == 0,
	      "listener: %s", strerror(errno));
	CHECK(bind(ls, (struct sockaddr *)&a, sizeof a) == 0 && listen(ls, 4) == 0, "listen: %s", strerror(errno));
	CHECK(getsockname(ls, (struct sockaddr *)&a, &l) == 0, "getsockname: %s", strerror(errno));
	c = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(c >= 0 && connect(c, (struct sockaddr *)&a, sizeof a) == 0, "connect: %s", strerror(errno));
	s = accept(ls, NULL, NULL);
	CHECK(s >= 0, "accept: %s", strerror(errno));
	v = 77;
	CHECK(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0 &&
		      setsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) == 0 &&
		      setsockopt(c, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof v) == 0,
	      "client options: %s", strerror(errno));
	v = 11;
	CHECK(setsockopt(c, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof v) == 0, "KEEPINTVL: %s", strerror(errno));
	v = 5;
	CHECK(setsockopt(c, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof v) == 0, "KEEPCNT: %s", strerror(errno));
	v = 65536;
	CHECK(setsockopt(c, SOL_SOCKET, SO_SNDBUF, &v, sizeof v) == 0, "SNDBUF: %s", strerror(errno));
	CHECK(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0, "RCVTIMEO: %s", strerror(errno));
	put(ls, LISTENER);
	put(c, ACLIENT);
	put(s, ASERVER);

	CHECK(write(ASERVER, "hello-client", 12) == 12, "server write: %s", strerror(errno));
	/* fill the server's receive queue, then the client's send queue */
	for (int idle = 0; idle < 20;) {
		ssize_t n;

		for (size_t i = 0; i < sizeof buf; i++)
			buf[i] = pat(*sent + i);
		n = send(ACLIENT, buf, sizeof buf, MSG_DONTWAIT);
		if (n > 0) {
			*sent += n;
			idle = 0;
			continue;
		}
		CHECK(errno == EAGAIN, "client send: %s", strerror(errno));
		usleep(10000); /* let the window close */
		idle++;
	}
	{
		int outq = -1, nsd = -1, inq = -1;

		ioctl(ACLIENT, TIOCOUTQ, &outq);
		ioctl(ACLIENT, SIOCOUTQNSD, &nsd);
		ioctl(ASERVER, FIONREAD, &inq);
		case_log("A: port %d, client wrote %lu bytes: send queue %d (unsent %d), server receive queue %d",
			 ntohs(a.sin_port), *sent, outq, nsd, inq);
		CHECK(nsd > 0 && inq > 0, "could not set up queues (unsent %d, server queue %d)", nsd, inq);
	}
}

static void setup_b(void)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	socklen_t l = sizeof a;
	int ls, c, s;

	ls = socket(AF_INET6, SOCK_STREAM, 0);
	CHECK(ls >= 0 && bind(ls, (struct sockaddr *)&a, sizeof a) == 0 && listen(ls, 1) == 0, "v6 listener: %s",
	      strerror(errno));
	CHECK(getsockname(ls, (struct sockaddr *)&a, &l) == 0, "getsockname: %s", strerror(errno));
	c = socket(AF_INET6, SOCK_STREAM, 0);
	CHECK(c >= 0 && connect(c, (struct sockaddr *)&a, sizeof a) == 0, "v6 connect: %s", strerror(errno));
	s = accept(ls, NULL, NULL);
	CHECK(s >= 0, "accept: %s", strerror(errno));
	close(ls);
	put(c, BCLIENT);
	put(s, BSERVER);
	CHECK(write(BCLIENT, "bye", 3) == 3 && shutdown(BCLIENT, SHUT_WR) == 0, "B half-close: %s", strerror(errno));
	usleep(50000);
	case_log("B: port %d half-closed by the client", ntohs(a.sin6_port));
}

int main(int argc, char **argv)
{
	unsigned long sent = 0, got = 0;
	char buf[64];
	struct timeval tv;
	socklen_t l = sizeof tv;
	unsigned char big[65536];

	case_init(argc, argv);
	setup_a(&sent);
	setup_b();

	case_ready();
	case_wait_go();

	/* A: options */
	CHECK(getint(ACLIENT, IPPROTO_TCP, TCP_NODELAY) == 1, "TCP_NODELAY lost");
	CHECK(getint(ACLIENT, SOL_SOCKET, SO_KEEPALIVE) == 1, "SO_KEEPALIVE lost");
	CHECK(getint(ACLIENT, IPPROTO_TCP, TCP_KEEPIDLE) == 77, "TCP_KEEPIDLE %d", getint(ACLIENT, IPPROTO_TCP, TCP_KEEPIDLE));
	CHECK(getint(ACLIENT, IPPROTO_TCP, TCP_KEEPINTVL) == 11, "TCP_KEEPINTVL lost");
	CHECK(getint(ACLIENT, IPPROTO_TCP, TCP_KEEPCNT) == 5, "TCP_KEEPCNT lost");
	CHECK(getint(ACLIENT, SOL_SOCKET, SO_SNDBUF) == 131072, "SO_SNDBUF %d", getint(ACLIENT, SOL_SOCKET, SO_SNDBUF));
	CHECK(getsockopt(ACLIENT, SOL_SOCKET, SO_RCVTIMEO, &tv, &l) == 0 && tv.tv_sec == 3 && tv.tv_usec == 500000,
	      "SO_RCVTIMEO %ld.%06ld", (long)tv.tv_sec, (long)tv.tv_usec);
	CHECK(getint(LISTENER, SOL_SOCKET, SO_ACCEPTCONN) == 1, "listener no longer listening");
	/* A: the 12 bytes for the client, then everything the client wrote */
	CHECK(recv(ACLIENT, buf, sizeof buf, 0) == 12 && !memcmp(buf, "hello-client", 12), "client lost its queued bytes");
	expect_pattern(ASERVER, &got, sent);
	CHECK(recv(ASERVER, buf, sizeof buf, MSG_DONTWAIT) < 0 && errno == EAGAIN, "server got more than was sent");
	/* A: 4 MiB more, written by a child while we read */
	{
		unsigned long more = 4 << 20, off = sent;
		pid_t p = fork();

		CHECK(p >= 0, "fork: %s", strerror(errno));
		if (p == 0) {
			while (off < sent + more) {
				size_t n = sent + more - off < sizeof big ? sent + more - off : sizeof big;
				ssize_t w;

				for (size_t i = 0; i < n; i++)
					big[i] = pat(off + i);
				w = write(ACLIENT, big, n);
				if (w <= 0)
					_exit(1);
				off += w;
			}
			_exit(0);
		}
		expect_pattern(ASERVER, &got, more);
		waitpid(p, NULL, 0);
		case_log("A: %lu bytes arrived in order", got);
	}
	/* B: the server sees "bye" then end of file, and can still talk */
	CHECK(read(BSERVER, buf, sizeof buf) == 3 && !memcmp(buf, "bye", 3), "B: server lost \"bye\"");
	CHECK(read(BSERVER, buf, sizeof buf) == 0, "B: server does not see the client's end of file");
	CHECK(write(BSERVER, "ack", 3) == 3, "B: server write: %s", strerror(errno));
	CHECK(read(BCLIENT, buf, sizeof buf) == 3 && !memcmp(buf, "ack", 3), "B: client did not get \"ack\"");
	close(BSERVER);
	CHECK(read(BCLIENT, buf, sizeof buf) == 0, "B: client does not see the server's close");
	case_pass();
}

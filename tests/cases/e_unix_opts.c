/*
 * e_unix_opts: socket-level options of unix sockets of every kind survive
 * checkpoint/restore, read back exactly and still act:
 *   - a stream listener on ls.sock: SO_REUSEADDR, SO_KEEPALIVE, SO_RCVTIMEO
 *     with microseconds;
 *   - the connection accepted from it: SO_SNDTIMEO, SO_LINGER on, SO_PRIORITY,
 *     SO_MARK, SO_RCVLOWAT, 6 bytes queued; its client: SO_LINGER off with
 *     seconds kept, SO_TIMESTAMPNS, SO_BUSY_POLL;
 *   - a bound dgram socket: a classic BPF filter that drops datagrams
 *     shorter than 4 bytes, SO_TIMESTAMP, SO_RCVTIMEO, SO_PRIORITY, one
 *     datagram queued;
 *   - a seqpacket socketpair: the same filter, locked (SO_LOCK_FILTER), and
 *     SO_OOBINLINE, SO_SNDTIMEO on the other end;
 *   - a stream socketpair: SO_KEEPALIVE, SO_SNDBUF (SO_BUF_LOCK bits),
 *     SO_RCVTIMEO, SO_REUSEADDR.
 * After "go": every option reads what it read before the dumps, queued
 * data is intact, the filters still drop short messages and keep long
 * ones, the locked filter cannot be detached, timestamps still come.
 */
#define _GNU_SOURCE
#include "case.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

static const int intopts[] = { SO_REUSEADDR, SO_KEEPALIVE, SO_PRIORITY, SO_MARK, SO_RCVLOWAT,
			       SO_BUSY_POLL, SO_OOBINLINE, SO_TIMESTAMP, SO_TIMESTAMPNS,
			       SO_BUF_LOCK, SO_SNDBUF, SO_RCVBUF, SO_LOCK_FILTER, SO_PASSCRED };
#define NINT (sizeof intopts / sizeof intopts[0])

struct snap {
	int v[NINT];
	struct timeval rcvtimeo, sndtimeo;
	struct linger linger;
	int filter_len;
};

static void snap(int fd, struct snap *s)
{
	socklen_t l;

	memset(s, 0, sizeof *s);
	for (size_t i = 0; i < NINT; i++) {
		l = sizeof s->v[i];
		if (getsockopt(fd, SOL_SOCKET, intopts[i], &s->v[i], &l) != 0)
			s->v[i] = -12345;
	}
	l = sizeof s->rcvtimeo;
	CHECK(getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &s->rcvtimeo, &l) == 0, "SO_RCVTIMEO: %s", strerror(errno));
	l = sizeof s->sndtimeo;
	CHECK(getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &s->sndtimeo, &l) == 0, "SO_SNDTIMEO: %s", strerror(errno));
	l = sizeof s->linger;
	CHECK(getsockopt(fd, SOL_SOCKET, SO_LINGER, &s->linger, &l) == 0, "SO_LINGER: %s", strerror(errno));
	struct sock_filter one;
	l = 0;
	CHECK(getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, &one, &l) == 0, "SO_GET_FILTER: %s", strerror(errno));
	s->filter_len = l;
}

static void compare(const char *what, int fd, const struct snap *want)
{
	struct snap got;

	snap(fd, &got);
	for (size_t i = 0; i < NINT; i++)
		CHECK(got.v[i] == want->v[i], "%s: option %d reads %d, was %d", what, intopts[i], got.v[i], want->v[i]);
	CHECK(got.rcvtimeo.tv_sec == want->rcvtimeo.tv_sec && got.rcvtimeo.tv_usec == want->rcvtimeo.tv_usec,
	      "%s: SO_RCVTIMEO %ld.%06ld, was %ld.%06ld", what, (long)got.rcvtimeo.tv_sec, (long)got.rcvtimeo.tv_usec,
	      (long)want->rcvtimeo.tv_sec, (long)want->rcvtimeo.tv_usec);
	CHECK(got.sndtimeo.tv_sec == want->sndtimeo.tv_sec && got.sndtimeo.tv_usec == want->sndtimeo.tv_usec,
	      "%s: SO_SNDTIMEO %ld.%06ld, was %ld.%06ld", what, (long)got.sndtimeo.tv_sec, (long)got.sndtimeo.tv_usec,
	      (long)want->sndtimeo.tv_sec, (long)want->sndtimeo.tv_usec);
	CHECK(got.linger.l_onoff == want->linger.l_onoff && got.linger.l_linger == want->linger.l_linger,
	      "%s: SO_LINGER {%d, %d}, was {%d, %d}", what, got.linger.l_onoff, got.linger.l_linger,
	      want->linger.l_onoff, want->linger.l_linger);
	CHECK(got.filter_len == want->filter_len, "%s: filter of %d instructions, was %d", what, got.filter_len,
	      want->filter_len);
}

static void setint(int fd, int opt, int v, const char *name)
{
	CHECK(setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v) == 0, "%s=%d: %s", name, v, strerror(errno));
}

static void settv(int fd, int opt, long sec, long usec, const char *name)
{
	struct timeval tv = { sec, usec };

	CHECK(setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv) == 0, "%s: %s", name, strerror(errno));
}

static void setlinger(int fd, int on, int secs)
{
	struct linger l = { 1, secs };

	CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) == 0, "SO_LINGER: %s", strerror(errno));
	l.l_onoff = on;
	CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) == 0, "SO_LINGER: %s", strerror(errno));
}

/* drop messages shorter than 4 bytes */
static struct sock_filter short_drop[] = {
	BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
	BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 4, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, 0xffff),
	BPF_STMT(BPF_RET | BPF_K, 0),
};

static void attach(int fd)
{
	struct sock_fprog p = { sizeof short_drop / sizeof short_drop[0], short_drop };

	CHECK(setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &p, sizeof p) == 0, "SO_ATTACH_FILTER: %s",
	      strerror(errno));
}

/* expect fd to hold exactly want next, then nothing */
static void expect(const char *what, int fd, const char *want)
{
	char buf[64];
	ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);

	CHECK(n == (ssize_t)strlen(want) && memcmp(buf, want, n) == 0, "%s: read %zd bytes (%.*s), want %s", what, n,
	      n > 0 ? (int)n : 0, buf, want);
}

static void expect_empty(const char *what, int fd)
{
	char buf[64];
	ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);

	CHECK(n < 0 && errno == EAGAIN, "%s: read %zd more bytes (%s)", what, n, n < 0 ? strerror(errno) : "");
}

int main(int argc, char **argv)
{
	struct sockaddr_un la = { AF_UNIX, "ls.sock" }, da = { AF_UNIX };
	int mark = 0x1234;

	case_init(argc, argv);
	snprintf(da.sun_path + 1, sizeof da.sun_path - 1, "ctrcr-uo-%d", getpid());
	socklen_t dlen = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(da.sun_path + 1);

	/* stream listener, accepted connection and its client */
	int lis = socket(AF_UNIX, SOCK_STREAM, 0);
	setint(lis, SO_REUSEADDR, 1, "SO_REUSEADDR");
	CHECK(bind(lis, (struct sockaddr *)&la, sizeof la) == 0 && listen(lis, 4) == 0, "listen: %s",
	      strerror(errno));
	setint(lis, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
	settv(lis, SO_RCVTIMEO, 1, 500000, "SO_RCVTIMEO");
	int cli = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(connect(cli, (struct sockaddr *)&la, sizeof la) == 0, "connect: %s", strerror(errno));
	int acc = accept(lis, NULL, NULL);
	CHECK(acc >= 0, "accept: %s", strerror(errno));
	settv(acc, SO_SNDTIMEO, 2, 250000, "SO_SNDTIMEO");
	setlinger(acc, 1, 9);
	setint(acc, SO_PRIORITY, 5, "SO_PRIORITY");
	if (setsockopt(acc, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0)
		case_log("SO_MARK not set (%s): not root?", strerror(errno));
	setint(acc, SO_RCVLOWAT, 3, "SO_RCVLOWAT");
	CHECK(write(cli, "abcdef", 6) == 6, "write: %s", strerror(errno));
	setlinger(cli, 0, 4);
	setint(cli, SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS");
	setint(cli, SO_BUSY_POLL, 50, "SO_BUSY_POLL");

	/* bound dgram socket with a filter */
	int dg = socket(AF_UNIX, SOCK_DGRAM, 0), dsend = socket(AF_UNIX, SOCK_DGRAM, 0);
	CHECK(bind(dg, (struct sockaddr *)&da, dlen) == 0, "bind dgram: %s", strerror(errno));
	attach(dg);
	setint(dg, SO_TIMESTAMP, 1, "SO_TIMESTAMP");
	settv(dg, SO_RCVTIMEO, 0, 300000, "SO_RCVTIMEO");
	setint(dg, SO_PRIORITY, 3, "SO_PRIORITY");
	CHECK(sendto(dsend, "xy", 2, 0, (struct sockaddr *)&da, dlen) == 2, "sendto: %s", strerror(errno));
	CHECK(sendto(dsend, "hello", 5, 0, (struct sockaddr *)&da, dlen) == 5, "sendto: %s", strerror(errno));

	/* seqpacket pair, filter locked on sp[0] */
	int sp[2];
	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp) == 0, "socketpair: %s", strerror(errno));
	attach(sp[0]);
	setint(sp[0], SO_LOCK_FILTER, 1, "SO_LOCK_FILTER");
	setint(sp[0], SO_OOBINLINE, 1, "SO_OOBINLINE");
	settv(sp[1], SO_SNDTIMEO, 0, 750000, "SO_SNDTIMEO");
	CHECK(send(sp[1], "rec1", 4, 0) == 4 && send(sp[1], "r", 1, 0) == 1, "send: %s", strerror(errno));

	/* stream pair */
	int ss[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, ss) == 0, "socketpair: %s", strerror(errno));
	setint(ss[0], SO_KEEPALIVE, 1, "SO_KEEPALIVE");
	setint(ss[0], SO_SNDBUF, 65536, "SO_SNDBUF");
	settv(ss[0], SO_RCVTIMEO, 3, 4000, "SO_RCVTIMEO");
	setint(ss[1], SO_REUSEADDR, 1, "SO_REUSEADDR");

	const struct {
		const char *what;
		int fd;
	} socks[] = { { "listener", lis }, { "accepted", acc }, { "client", cli }, { "dgram", dg },
		      { "seqpacket[0]", sp[0] }, { "seqpacket[1]", sp[1] }, { "stream[0]", ss[0] }, { "stream[1]", ss[1] } };
	struct snap want[8];
	for (int i = 0; i < 8; i++)
		snap(socks[i].fd, &want[i]);
	CHECK(want[1].v[0] == 0 && want[0].v[0] == 1 && want[1].linger.l_linger == 9 && want[2].linger.l_linger == 4 &&
		      want[2].linger.l_onoff == 0 && want[4].v[12] == 1 && want[3].filter_len == 4,
	      "options not as set before the dump");

	case_ready();
	case_wait_go();

	for (int i = 0; i < 8; i++)
		compare(socks[i].what, socks[i].fd, &want[i]);

	/* queues intact, the filters still filter */
	expect("accepted", acc, "abcdef");
	expect("dgram", dg, "hello");
	expect_empty("dgram", dg);
	CHECK(sendto(dsend, "ab", 2, 0, (struct sockaddr *)&da, dlen) == 2, "sendto: %s", strerror(errno));
	CHECK(sendto(dsend, "long", 4, 0, (struct sockaddr *)&da, dlen) == 4, "sendto: %s", strerror(errno));
	{
		char buf[16], cb[256];
		struct iovec iov = { buf, sizeof buf };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb, .msg_controllen = sizeof cb };
		ssize_t n = recvmsg(dg, &m, MSG_DONTWAIT);
		CHECK(n == 4 && memcmp(buf, "long", 4) == 0, "dgram after restore: read %zd bytes, want long", n);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		CHECK(c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMP, "no SCM_TIMESTAMP after restore");
	}
	expect_empty("dgram filter", dg);
	expect("seqpacket", sp[0], "rec1");
	CHECK(send(sp[1], "xy", 2, 0) == 2 && send(sp[1], "rec2", 4, 0) == 4, "send: %s", strerror(errno));
	expect("seqpacket filter", sp[0], "rec2");
	expect_empty("seqpacket filter", sp[0]);
	int zero = 0;
	CHECK(setsockopt(sp[0], SOL_SOCKET, SO_DETACH_FILTER, &zero, sizeof zero) != 0 && errno == EPERM,
	      "the locked filter could be detached");
	/* the listener still takes connections */
	int c2 = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(connect(c2, (struct sockaddr *)&la, sizeof la) == 0, "connect after restore: %s", strerror(errno));
	CHECK(accept(lis, NULL, NULL) >= 0, "accept after restore: %s", strerror(errno));
	case_pass();
}

/*
 * t_socketpairs: unix socketpairs of each type shared between two processes,
 * with messages queued in both directions at dump time.
 *
 *   R   case root: holds end 0 of each pair
 *   `-- K   child: holds end 1 of each pair
 *
 * Pairs: SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET. Queued before ready (the
 * receiver reads nothing until go):
 *   stream     R->K 100+2000+30000 bytes       K->R 5000+7 bytes
 *   dgram      R->K 1,17,0,1000,4096,30000     K->R 3,2500,65000
 *   seqpacket  R->K 5,500,5000                 K->R 64,50000
 * (a zero-length datagram is a message too). Options set before the fork:
 * SO_SNDBUF/SO_RCVBUF on several ends, SO_PASSCRED on K's dgram end; the
 * values read back (getsockopt) are recorded, with SO_TYPE, and FIONREAD of
 * every receiving end.
 *
 * After go each side checks its three sockets: the same type and options,
 * the same FIONREAD for stream/seqpacket, then the exact queued messages in
 * order (the stream as one byte sequence; dgram/seqpacket one message per
 * recvmsg with its exact length, never MSG_TRUNC), then nothing more
 * (EAGAIN). Then new messages flow: R sends a ping on each pair, K checks it
 * (on dgram: SCM_CREDENTIALS with R's pid, uid 0, as SO_PASSCRED asks) and
 * answers a pong that R checks. K exits 0.
 */
#include "t_tree.h"

#include <sys/ioctl.h>
#include <sys/socket.h>

enum { ST, DG, SP, NSK };
static const int sk_type[NSK] = { SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET };
static const char *sk_name[NSK] = { "stream", "dgram", "seqpacket" };

#define MAXMSG 8
/* Sizes of the queued messages, per pair and direction (0: R->K, 1: K->R),
 * ended by -1. */
static const int qsize[NSK][2][MAXMSG] = {
	[ST] = { { 100, 2000, 30000, -1 }, { 5000, 7, -1 } },
	[DG] = { { 1, 17, 0, 1000, 4096, 30000, -1 }, { 3, 2500, 65000, -1 } },
	[SP] = { { 5, 500, 5000, -1 }, { 64, 50000, -1 } },
};
#define PING_LEN 100

/* Options set before the fork: pair, end, option, value. */
static const struct {
	int sk, end, opt, val;
} set_opts[] = {
	{ ST, 0, SO_SNDBUF, 65536 },   { ST, 0, SO_RCVBUF, 98304 },
	{ ST, 1, SO_SNDBUF, 200000 },  { DG, 0, SO_SNDBUF, 300000 },
	{ DG, 1, SO_RCVBUF, 123456 },  { DG, 1, SO_PASSCRED, 1 },
	{ SP, 0, SO_RCVBUF, 150000 },  { SP, 1, SO_SNDBUF, 120000 },
};

struct skstate {
	int type, sndbuf, rcvbuf, passcred;
};

static int fds[NSK][2];
static struct skstate rec[NSK][2];
static int inq[NSK][2]; /* FIONREAD of each end once everything is queued */
static unsigned char buf[70000], expect[70000];

/* msg_fill fills message m of pair sk in direction dir (2: ping, 3: pong). */
static void msg_fill(int sk, int dir, int m, unsigned char *b, size_t len)
{
	tt_fill(tt_mix((uint64_t)(sk * 64 + dir * 8 + m + 1)), 0, b, len);
}

static int getopt_int(int fd, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);

	CHECK(getsockopt(fd, SOL_SOCKET, opt, &v, &l) == 0, "getsockopt %d: %s",
	      opt, strerror(errno));
	return v;
}

static void read_state(int fd, struct skstate *s)
{
	s->type = getopt_int(fd, SO_TYPE);
	s->sndbuf = getopt_int(fd, SO_SNDBUF);
	s->rcvbuf = getopt_int(fd, SO_RCVBUF);
	s->passcred = getopt_int(fd, SO_PASSCRED);
}

static int fionread(int fd)
{
	int n = -1;

	CHECK(ioctl(fd, FIONREAD, &n) == 0, "FIONREAD: %s", strerror(errno));
	return n;
}

/* send_queued sends the queued messages of pair sk from end (direction =
 * end: end 0 sends R->K). Never blocks. */
static void send_queued(int sk, int end)
{
	int m;

	for (m = 0; qsize[sk][end][m] >= 0; m++) {
		int len = qsize[sk][end][m];
		ssize_t n;

		msg_fill(sk, end, m, buf, (size_t)len);
		n = send(fds[sk][end], buf, (size_t)len, MSG_DONTWAIT);
		CHECK(n == len, "%s: queue message %d (%d bytes): %zd (%s)",
		      sk_name[sk], m, len, n, n < 0 ? strerror(errno) : "short");
	}
}

/* recv_one waits (bounded) for one message on fd; returns its length and
 * the msg_flags, and the SCM_CREDENTIALS if cred is not NULL (pid 0 when
 * there were none). */
static ssize_t recv_one(int fd, void *b, size_t size, int *flags,
			struct ucred *cred)
{
	char cbuf[CMSG_SPACE(sizeof(struct ucred))];
	struct iovec iov = { b, size };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	struct cmsghdr *c;
	ssize_t n;

	CHECK(poll(&pfd, 1, TT_TIMEOUT_MS) == 1, "no message within %d ms",
	      TT_TIMEOUT_MS);
	n = recvmsg(fd, &mh, MSG_DONTWAIT);
	CHECK(n >= 0, "recvmsg: %s", strerror(errno));
	*flags = mh.msg_flags;
	if (cred) {
		memset(cred, 0, sizeof(*cred));
		for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_level == SOL_SOCKET &&
			    c->cmsg_type == SCM_CREDENTIALS)
				memcpy(cred, CMSG_DATA(c), sizeof(*cred));
	}
	return n;
}

/* check_queued reads and checks the messages queued towards end. */
static void check_queued(int sk, int end, const char *who)
{
	int fd = fds[sk][end], dir = !end, m, flags;
	char c;

	if (sk_type[sk] == SOCK_STREAM) {
		size_t total = 0;
		long d;

		for (m = 0; qsize[sk][dir][m] >= 0; m++) {
			msg_fill(sk, dir, m, expect + total,
				 (size_t)qsize[sk][dir][m]);
			total += (size_t)qsize[sk][dir][m];
		}
		tt_read_full(fd, buf, total, "stream: queued bytes");
		for (d = 0; d < (long)total && buf[d] == expect[d]; d++)
			;
		CHECK(d == (long)total, "%s: stream: queued byte %ld of %zu is wrong",
		      who, d, total);
	} else {
		for (m = 0; qsize[sk][dir][m] >= 0; m++) {
			int len = qsize[sk][dir][m];
			ssize_t n = recv_one(fd, buf, sizeof(buf), &flags, NULL);

			msg_fill(sk, dir, m, expect, (size_t)len);
			CHECK(n == len && !(flags & MSG_TRUNC),
			      "%s: %s: queued message %d: %zd bytes (flags %#x), want %d",
			      who, sk_name[sk], m, n, flags, len);
			CHECK(memcmp(buf, expect, (size_t)len) == 0,
			      "%s: %s: queued message %d has wrong bytes", who,
			      sk_name[sk], m);
		}
	}
	errno = 0;
	CHECK(recv(fd, &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN,
	      "%s: %s: more than the queued messages (%s)", who, sk_name[sk],
	      errno ? strerror(errno) : "data");
}

/* check_end compares the state of end of pair sk with the record. */
static void check_end(int sk, int end, const char *who)
{
	struct skstate now;
	const struct skstate *was = &rec[sk][end];

	read_state(fds[sk][end], &now);
	CHECK(now.type == was->type && now.sndbuf == was->sndbuf &&
		      now.rcvbuf == was->rcvbuf && now.passcred == was->passcred,
	      "%s: %s end %d: type/sndbuf/rcvbuf/passcred %d/%d/%d/%d, was %d/%d/%d/%d",
	      who, sk_name[sk], end, now.type, now.sndbuf, now.rcvbuf,
	      now.passcred, was->type, was->sndbuf, was->rcvbuf, was->passcred);
	if (sk_type[sk] != SOCK_DGRAM)
		CHECK(fionread(fds[sk][end]) == inq[sk][end],
		      "%s: %s end %d: %d bytes queued, was %d", who, sk_name[sk],
		      end, fionread(fds[sk][end]), inq[sk][end]);
}

/* recv_exact receives one message (stream: len bytes) and compares it. */
static void recv_exact(int sk, int end, int dir, struct ucred *cred,
		       const char *who)
{
	int flags = 0;

	msg_fill(sk, dir, 0, expect, PING_LEN);
	if (sk_type[sk] == SOCK_STREAM) {
		tt_read_full(fds[sk][end], buf, PING_LEN, "stream: new bytes");
	} else {
		ssize_t n = recv_one(fds[sk][end], buf, sizeof(buf), &flags, cred);

		CHECK(n == PING_LEN && !(flags & MSG_TRUNC),
		      "%s: %s: new message of %zd bytes (flags %#x)", who,
		      sk_name[sk], n, flags);
	}
	CHECK(memcmp(buf, expect, PING_LEN) == 0, "%s: %s: new message wrong",
	      who, sk_name[sk]);
}

static void send_new(int sk, int end, int dir)
{
	msg_fill(sk, dir, 0, buf, PING_LEN);
	CHECK(send(fds[sk][end], buf, PING_LEN, 0) == PING_LEN, "%s: send: %s",
	      sk_name[sk], strerror(errno));
}

static __attribute__((noreturn)) void child(pid_t root, int rep)
{
	int sk;
	char c = 'k';

	for (sk = 0; sk < NSK; sk++) {
		close(fds[sk][0]);
		inq[sk][1] = fionread(fds[sk][1]);
		send_queued(sk, 1);
	}
	tt_write_full(rep, &c, 1, "K: queued");

	case_wait_go();
	for (sk = 0; sk < NSK; sk++)
		check_end(sk, 1, "K");
	for (sk = 0; sk < NSK; sk++)
		check_queued(sk, 1, "K");
	tt_write_full(rep, &c, 1, "K: checked");
	for (sk = 0; sk < NSK; sk++) {
		struct ucred cred;

		recv_exact(sk, 1, 2, sk == DG ? &cred : NULL, "K");
		if (sk == DG)
			CHECK(cred.pid == root && cred.uid == 0 && cred.gid == 0,
			      "K: dgram ping credentials pid %d uid %d gid %d, want %d 0 0",
			      (int)cred.pid, (int)cred.uid, (int)cred.gid,
			      (int)root);
		send_new(sk, 1, 3);
	}
	_exit(0);
}

int main(int argc, char **argv)
{
	pid_t root, k, pids[2];
	int rep[2], sk, i;
	char c;

	case_init(argc, argv);
	root = getpid();
	for (sk = 0; sk < NSK; sk++)
		CHECK(socketpair(AF_UNIX, sk_type[sk], 0, fds[sk]) == 0,
		      "socketpair %s: %s", sk_name[sk], strerror(errno));
	for (i = 0; i < (int)(sizeof(set_opts) / sizeof(set_opts[0])); i++)
		CHECK(setsockopt(fds[set_opts[i].sk][set_opts[i].end], SOL_SOCKET,
				 set_opts[i].opt, &set_opts[i].val,
				 sizeof(int)) == 0,
		      "setsockopt %d: %s", set_opts[i].opt, strerror(errno));
	for (sk = 0; sk < NSK; sk++) {
		read_state(fds[sk][0], &rec[sk][0]);
		read_state(fds[sk][1], &rec[sk][1]);
		send_queued(sk, 0);
	}
	tt_pipe(rep);

	k = tt_fork();
	if (k == 0) {
		close(rep[0]);
		child(root, rep[1]);
	}
	close(rep[1]);
	for (sk = 0; sk < NSK; sk++)
		close(fds[sk][1]);
	tt_read_full(rep[0], &c, 1, "K queued its messages");
	for (sk = 0; sk < NSK; sk++)
		inq[sk][0] = fionread(fds[sk][0]);
	case_log("K %d; FIONREAD R: %d/%d/%d", (int)k, inq[ST][0], inq[DG][0],
		 inq[SP][0]);
	pids[0] = root;
	pids[1] = k;
	tt_write_tree(pids, 2);
	case_ready();

	case_wait_go();
	for (sk = 0; sk < NSK; sk++)
		check_end(sk, 0, "R");
	for (sk = 0; sk < NSK; sk++)
		check_queued(sk, 0, "R");
	tt_read_full(rep[0], &c, 1, "K checked its queues");
	for (sk = 0; sk < NSK; sk++) {
		send_new(sk, 0, 2);
		recv_exact(sk, 0, 3, NULL, "R");
	}
	tt_expect_exit(k, 0, "K");
	tt_no_children();
	case_pass();
}

/*
 * e_unix_gone.c - unix sockets whose peer was closed (issue 11 item 1).
 *
 * Every socket below has lost its peer before "ready"; after the restores
 * the case checks it answers exactly as the kernel answered before:
 *   sa   stream pair, the peer sent "hello" then closed
 *   sb   stream pair, closed by the peer with our "x" unread in it
 *        (ECONNRESET pending: POLLERR, then the read past "tail" fails)
 *   sc   seqpacket pair, records "r1", "", "r3" from the peer, then closed
 *   sd   accepted from the listener WORKDIR/l.sock; its client sent "quit"
 *        and closed (the tmux server right after a client detached)
 *   se   client of WORKDIR/l.sock whose accepted end sent "bye" and closed
 *   sf   dgram pair, the peer sent "d1" then closed
 *   sg   dgram connected to the abstract @ctrcr-gone-PID, closed since
 *   sh   dgram bound to @ctrcr-goneh-PID, connected to WORKDIR/dg.sock,
 *        which sent "dg" to it then closed (its file stays on disk)
 *   l2   listener WORKDIR/l2.sock with two waiting connections: a client
 *        bound to @ctrcr-gonec-PID that sent "early" and closed, then a
 *        client that closed without sending
 * Checked: getsockname/getpeername, poll revents (as before the dump),
 * SO_ERROR (read once, at the end), the queued data with its boundaries,
 * then EOF, write → EPIPE (with SIGPIPE for stream), dgram send →
 * ECONNREFUSED once then ENOTCONN; dg.sock is the same file as before.
 */
#include "case.h"
#include "unix_addr.h"

#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

static volatile sig_atomic_t pipes;

static void on_pipe(int sig)
{
	(void)sig;
	pipes++;
}

static void pair(int type, int sv[2])
{
	if (socketpair(AF_UNIX, type, 0, sv) != 0)
		case_fail("socketpair: %s", strerror(errno));
}

static void put(int fd, const char *s)
{
	if (send(fd, s, strlen(s), MSG_NOSIGNAL) != (ssize_t)strlen(s))
		case_fail("send %s: %s", s, strerror(errno));
}

/* name of fd's own (peer=0) or peer's (peer=1) address as "@x", "/p", ""
 * (unnamed) or "ERR<errno>" */
static void name_of(int fd, int peer, char *out, size_t n)
{
	struct sockaddr_un a;
	socklen_t l = sizeof(a);
	int r;

	memset(&a, 0, sizeof(a));
	r = peer ? getpeername(fd, (void *)&a, &l) : getsockname(fd, (void *)&a, &l);
	if (r != 0)
		snprintf(out, n, "ERR%d", errno);
	else if (l <= offsetof(struct sockaddr_un, sun_path))
		snprintf(out, n, "%s", "");
	else if (a.sun_path[0] == 0)
		snprintf(out, n, "@%.*s", (int)(l - offsetof(struct sockaddr_un, sun_path) - 1), a.sun_path + 1);
	else
		snprintf(out, n, "%s", a.sun_path);
}

static void expect_names(const char *what, int fd, const char *self, const char *peer)
{
	char got[256];

	name_of(fd, 0, got, sizeof(got));
	if (strcmp(got, self) != 0)
		case_fail("%s: getsockname %s, want %s", what, got, self);
	name_of(fd, 1, got, sizeof(got));
	if (strcmp(got, peer) != 0)
		case_fail("%s: getpeername %s, want %s", what, got, peer);
}

static short revents(int fd)
{
	struct pollfd p = { fd, POLLIN | POLLOUT | POLLRDHUP | POLLPRI, 0 };

	if (poll(&p, 1, 0) < 0)
		case_fail("poll: %s", strerror(errno));
	return p.revents;
}

/* expect one read of exactly s ("" for an empty record); NULL: EOF */
static void expect_read(const char *what, int fd, const char *s)
{
	char buf[64];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

	if (!s) {
		if (n != 0)
			case_fail("%s: read %zd (%s), want EOF", what, n, n < 0 ? strerror(errno) : "data");
		return;
	}
	if (n != (ssize_t)strlen(s) || memcmp(buf, s, n) != 0)
		case_fail("%s: read %zd (%s), want %s", what, n, n < 0 ? strerror(errno) : "data", s);
}

static void expect_err(const char *what, ssize_t r, int want)
{
	if (r >= 0 || errno != want)
		case_fail("%s: %zd (%s), want %s", what, r, r < 0 ? strerror(errno) : "ok", strerror(want));
}

/* write → EPIPE, raising sig SIGPIPE (the kernel raises it for stream
 * sockets, not for seqpacket), never with MSG_NOSIGNAL */
static void expect_pipe(const char *what, int fd, int sig)
{
	int before = pipes;

	expect_err(what, write(fd, "w", 1), EPIPE);
	if (pipes != before + sig)
		case_fail("%s: write raised %d SIGPIPE, want %d", what, pipes - before, sig);
	expect_err(what, send(fd, "w", 1, MSG_NOSIGNAL), EPIPE);
	if (pipes != before + sig)
		case_fail("%s: MSG_NOSIGNAL send raised SIGPIPE", what);
}

static int so_error(int fd)
{
	int v = -1;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &l) != 0)
		case_fail("SO_ERROR: %s", strerror(errno));
	return v;
}

int main(int argc, char **argv)
{
	char ls[PATH_MAX], dg[PATH_MAX], ls2[PATH_MAX], ab[64], abh[64], abc[64];
	int sv[2], sa, sb, sc, sd, se, sf, sg, sh, l, l2, c, x;
	short ev[8];
	struct stat dst0, dst1;

	case_init(argc, argv);
	signal(SIGPIPE, on_pipe);
	snprintf(ls, sizeof(ls), "%s/l.sock", case_workdir);
	snprintf(dg, sizeof(dg), "%s/dg.sock", case_workdir);
	snprintf(ab, sizeof(ab), "@ctrcr-gone-%d", (int)getpid());
	snprintf(abh, sizeof(abh), "@ctrcr-goneh-%d", (int)getpid());
	snprintf(abc, sizeof(abc), "@ctrcr-gonec-%d", (int)getpid());
	snprintf(ls2, sizeof(ls2), "%s/l2.sock", case_workdir);

	pair(SOCK_STREAM, sv);
	sa = sv[0];
	put(sv[1], "hello");
	close(sv[1]);

	pair(SOCK_STREAM, sv);
	sb = sv[0];
	put(sv[1], "tail");
	put(sb, "x");
	close(sv[1]);

	pair(SOCK_SEQPACKET, sv);
	sc = sv[0];
	put(sv[1], "r1");
	put(sv[1], "");
	put(sv[1], "r3");
	close(sv[1]);

	l = sock(SOCK_STREAM);
	do_bind(l, ls);
	if (listen(l, 4) != 0)
		case_fail("listen: %s", strerror(errno));
	c = sock(SOCK_STREAM);
	do_connect(c, ls);
	sd = accept(l, NULL, NULL);
	if (sd < 0)
		case_fail("accept: %s", strerror(errno));
	put(c, "quit");
	close(c);
	se = sock(SOCK_STREAM);
	do_connect(se, ls);
	x = accept(l, NULL, NULL);
	if (x < 0)
		case_fail("accept: %s", strerror(errno));
	put(x, "bye");
	close(x);

	pair(SOCK_DGRAM, sv);
	sf = sv[0];
	put(sv[1], "d1");
	close(sv[1]);

	x = sock(SOCK_DGRAM);
	do_bind(x, ab);
	sg = sock(SOCK_DGRAM);
	do_connect(sg, ab);
	close(x);

	x = sock(SOCK_DGRAM);
	do_bind(x, dg);
	sh = sock(SOCK_DGRAM);
	do_bind(sh, abh);
	do_connect(sh, dg);
	{
		struct sockaddr_un a;
		socklen_t al = addr(&a, abh);

		if (sendto(x, "dg", 2, 0, (void *)&a, al) != 2)
			case_fail("sendto: %s", strerror(errno));
	}
	close(x);
	if (stat(dg, &dst0) != 0)
		case_fail("stat %s: %s", dg, strerror(errno));

	l2 = sock(SOCK_STREAM);
	do_bind(l2, ls2);
	if (listen(l2, 4) != 0)
		case_fail("listen: %s", strerror(errno));
	c = sock(SOCK_STREAM);
	do_bind(c, abc);
	do_connect(c, ls2);
	put(c, "early");
	close(c);
	c = sock(SOCK_STREAM);
	do_connect(c, ls2);
	close(c);

	{
		int fds[8] = { sa, sb, sc, sd, se, sf, sg, sh };

		for (int i = 0; i < 8; i++)
			ev[i] = revents(fds[i]);
	}
	case_log("revents %#x %#x %#x %#x %#x %#x %#x %#x", ev[0], ev[1], ev[2], ev[3], ev[4], ev[5], ev[6], ev[7]);
	if (!(ev[1] & POLLERR) || (ev[0] & POLLERR))
		case_fail("setup: POLLERR on sb %#x / sa %#x", ev[1], ev[0]);
	case_ready();
	case_wait_go();

	{
		int fds[8] = { sa, sb, sc, sd, se, sf, sg, sh };

		for (int i = 0; i < 8; i++)
			if (revents(fds[i]) != ev[i])
				case_fail("fd %d (#%d): revents %#x, was %#x", fds[i], i, revents(fds[i]), ev[i]);
	}
	expect_names("sa", sa, "", "");
	expect_read("sa", sa, "hello");
	expect_read("sa", sa, NULL);
	expect_read("sa", sa, NULL);
	expect_pipe("sa", sa, 1);
	if (so_error(sa) != 0)
		case_fail("sa: SO_ERROR %d", so_error(sa));

	expect_names("sb", sb, "", "");
	expect_read("sb", sb, "tail");
	expect_err("sb read past the data", recv(sb, ab, 1, MSG_DONTWAIT), ECONNRESET);
	expect_read("sb", sb, NULL);
	expect_pipe("sb", sb, 1);
	if (so_error(sb) != 0)
		case_fail("sb: SO_ERROR %d after the reset was read", so_error(sb));

	expect_names("sc", sc, "", "");
	expect_read("sc", sc, "r1");
	expect_read("sc", sc, "");
	expect_read("sc", sc, "r3");
	expect_read("sc", sc, NULL);
	expect_pipe("sc", sc, 0);

	expect_names("sd", sd, ls, "");
	expect_read("sd", sd, "quit");
	expect_read("sd", sd, NULL);
	expect_pipe("sd", sd, 1);

	expect_names("se", se, "", ls);
	expect_read("se", se, "bye");
	expect_read("se", se, NULL);
	expect_pipe("se", se, 1);

	expect_names("sf", sf, "", "");
	expect_read("sf", sf, "d1");
	expect_err("sf read", recv(sf, ab, 1, MSG_DONTWAIT), EAGAIN);
	expect_err("sf send 1", send(sf, "w", 1, 0), ECONNREFUSED);
	expect_err("sf send 2", send(sf, "w", 1, 0), ENOTCONN);
	expect_names("sf after", sf, "", "ERR107");

	expect_names("sg", sg, "", ab);
	expect_err("sg send 1", send(sg, "w", 1, 0), ECONNREFUSED);
	expect_err("sg send 2", send(sg, "w", 1, 0), ENOTCONN);

	expect_names("sh", sh, abh, dg);
	{
		char buf[16];
		struct sockaddr_un from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(sh, buf, sizeof(buf), MSG_DONTWAIT, (void *)&from, &fl);

		if (n != 2 || memcmp(buf, "dg", 2) != 0 || strcmp(from.sun_path, dg) != 0)
			case_fail("sh: recvfrom %zd from %s", n, n >= 0 ? from.sun_path : strerror(errno));
	}
	expect_err("sh send 1", send(sh, "w", 1, 0), ECONNREFUSED);
	expect_err("sh send 2", send(sh, "w", 1, 0), ENOTCONN);
	if (stat(dg, &dst1) != 0 || dst1.st_ino != dst0.st_ino)
		case_fail("%s changed: inode %lu, was %lu", dg, (unsigned long)dst1.st_ino, (unsigned long)dst0.st_ino);
	for (int i = 0; i < 2; i++) {
		const char *what = i ? "second closed waiting client" : "first closed waiting client";

		x = accept4(l2, NULL, NULL, SOCK_NONBLOCK);
		if (x < 0)
			case_fail("%s: accept: %s", what, strerror(errno));
		expect_names(what, x, ls2, i ? "" : abc);
		if (i == 0)
			expect_read(what, x, "early");
		expect_read(what, x, NULL);
		expect_pipe(what, x, 1);
		close(x);
	}
	if (fcntl(l2, F_SETFL, O_NONBLOCK) != 0)
		case_fail("fcntl: %s", strerror(errno));
	expect_err("third accept", accept4(l2, NULL, NULL, 0), EAGAIN);
	unlink(ls);
	unlink(dg);
	unlink(ls2);
	case_pass();
}

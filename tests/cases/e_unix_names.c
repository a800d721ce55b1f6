/*
 * e_unix_names.c - names of unix sockets (issue 11 items 2-4).
 *
 *   dl   stream listener bound to WORKDIR/del.sock, then unlinked; dc is
 *        its accepted connection from da, dw a client still waiting
 *   gd   dgram bound to WORKDIR/gone/dg.sock, the directory removed since;
 *        gc connected to it sent "m"
 *   rl   stream listener bound to WORKDIR/re.sock, unlinked, and a regular
 *        file created at that path since
 *   ql   stream listener bound to the relative "rel.sock" (cwd WORKDIR),
 *        qc connected to it by that relative name, qa accepted
 *   qd   dgram bound to "sub/rd.sock", holding "q" from qs
 *   pp   stream pair: pp[0] with SO_PASSSEC, SO_PASSCRED, SO_PASSPIDFD set,
 *        pp[1] with SO_PASSRIGHTS cleared (where the kernel has them); they
 *        read back the same, and a message to pp[0] carries credentials
 * After the restores: every name reads back the same from getsockname /
 * getpeername and /proc/net/unix, no deleted path is on disk again (the
 * regular file is still that file), and the sockets still work.
 */
#include "case.h"
#include "unix_addr.h"

#include <fcntl.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/un.h>

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
	if (!peer)
		return;
	name_of(fd, 1, got, sizeof(got));
	if (strcmp(got, peer) != 0)
		case_fail("%s: getpeername %s, want %s", what, got, peer);
}

/* the path /proc/net/unix shows for fd's socket ("" unbound) */
static void proc_name(int fd, char *out, size_t n)
{
	struct stat st;
	char line[512];
	FILE *f;

	out[0] = 0;
	if (fstat(fd, &st) != 0 || !(f = fopen("/proc/net/unix", "re")))
		case_fail("proc_name: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		unsigned long ino;
		char path[300] = "";

		if (sscanf(line, "%*s %*s %*s %*s %*s %*s %lu %299s", &ino, path) >= 1 && ino == st.st_ino) {
			snprintf(out, n, "%s", path);
			fclose(f);
			return;
		}
	}
	fclose(f);
	case_fail("socket inode %lu not in /proc/net/unix", (unsigned long)st.st_ino);
}

static void expect_proc(const char *what, int fd, const char *want)
{
	char got[300];

	proc_name(fd, got, sizeof(got));
	if (strcmp(got, want) != 0)
		case_fail("%s: /proc/net/unix shows %s, want %s", what, got, want);
}

static void expect_absent(const char *path)
{
	struct stat st;

	if (lstat(path, &st) == 0 || errno != ENOENT)
		case_fail("%s exists (again)", path);
}

static void echo_check(const char *what, int a, int b)
{
	char buf[8];

	if (write(a, "ping", 4) != 4 || recv(b, buf, sizeof(buf), MSG_DONTWAIT) != 4 || memcmp(buf, "ping", 4) != 0)
		case_fail("%s: data does not go through", what);
}

int main(int argc, char **argv)
{
	char del[PATH_MAX], gdir[PATH_MAX], gdg[PATH_MAX], re[PATH_MAX];
	int dl, dc, da, dw, gd, gc, rl, f, ql, qc, qa, qd, qs, pp[2];
	const struct {
		const char *name;
		int end, opt, v;
	} po[] = { { "SO_PASSSEC", 0, SO_PASSSEC, 1 }, { "SO_PASSCRED", 0, SO_PASSCRED, 1 },
		   { "SO_PASSPIDFD", 0, 76, 1 }, { "SO_PASSRIGHTS", 1, 83, 0 } };
	int pov[4][2];

	case_init(argc, argv);
	snprintf(del, sizeof(del), "%s/del.sock", case_workdir);
	snprintf(gdir, sizeof(gdir), "%s/gone", case_workdir);
	snprintf(gdg, sizeof(gdg), "%s/gone/dg.sock", case_workdir);
	snprintf(re, sizeof(re), "%s/re.sock", case_workdir);

	dl = sock(SOCK_STREAM);
	do_bind(dl, del);
	if (listen(dl, 4) != 0)
		case_fail("listen: %s", strerror(errno));
	da = sock(SOCK_STREAM);
	do_connect(da, del);
	dc = accept(dl, NULL, NULL);
	if (dc < 0)
		case_fail("accept: %s", strerror(errno));
	dw = sock(SOCK_STREAM);
	do_connect(dw, del);
	unlink(del);

	if (mkdir(gdir, 0755) != 0)
		case_fail("mkdir: %s", strerror(errno));
	gd = sock(SOCK_DGRAM);
	do_bind(gd, gdg);
	gc = sock(SOCK_DGRAM);
	do_connect(gc, gdg);
	if (send(gc, "m", 1, 0) != 1)
		case_fail("send: %s", strerror(errno));
	unlink(gdg);
	rmdir(gdir);

	rl = sock(SOCK_STREAM);
	do_bind(rl, re);
	if (listen(rl, 4) != 0)
		case_fail("listen: %s", strerror(errno));
	unlink(re);
	f = open(re, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	if (f < 0 || write(f, "file", 4) != 4)
		case_fail("create %s: %s", re, strerror(errno));
	close(f);

	ql = sock(SOCK_STREAM);
	do_bind(ql, "rel.sock");
	if (listen(ql, 4) != 0)
		case_fail("listen: %s", strerror(errno));
	qc = sock(SOCK_STREAM);
	do_connect(qc, "rel.sock");
	qa = accept(ql, NULL, NULL);
	if (qa < 0)
		case_fail("accept: %s", strerror(errno));
	if (mkdir("sub", 0755) != 0)
		case_fail("mkdir sub: %s", strerror(errno));
	qd = sock(SOCK_DGRAM);
	do_bind(qd, "sub/rd.sock");
	qs = sock(SOCK_DGRAM);
	{
		struct sockaddr_un a;
		socklen_t al = addr(&a, "sub/rd.sock");

		if (sendto(qs, "q", 1, 0, (void *)&a, al) != 1)
			case_fail("sendto: %s", strerror(errno));
	}

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, pp) != 0)
		case_fail("socketpair: %s", strerror(errno));
	for (int i = 0; i < 4; i++) {
		int v = po[i].v;

		if (setsockopt(pp[po[i].end], SOL_SOCKET, po[i].opt, &v, sizeof(v)) != 0)
			case_log("%s: %s (kept unset)", po[i].name, strerror(errno));
		for (int e = 0; e < 2; e++) {
			socklen_t l = sizeof(v);

			v = -1;
			getsockopt(pp[e], SOL_SOCKET, po[i].opt, &v, &l);
			pov[i][e] = v;
		}
	}

	case_ready();
	case_wait_go();

	for (int i = 0; i < 4; i++)
		for (int e = 0; e < 2; e++) {
			int v = -1;
			socklen_t l = sizeof(v);

			getsockopt(pp[e], SOL_SOCKET, po[i].opt, &v, &l);
			if (v != pov[i][e])
				case_fail("pp[%d]: %s reads %d, was %d", e, po[i].name, v, pov[i][e]);
		}
	{
		char buf[8], cbuf[256];
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *c;
		int creds = 0;

		if (write(pp[1], "c", 1) != 1 || recvmsg(pp[0], &m, MSG_DONTWAIT) != 1)
			case_fail("pp: message does not go through: %s", strerror(errno));
		for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS &&
			    ((struct ucred *)CMSG_DATA(c))->pid == getpid())
				creds = 1;
		if (!creds)
			case_fail("pp[0]: no SCM_CREDENTIALS with our pid (SO_PASSCRED lost?)");
	}

	expect_names("ql", ql, "rel.sock", NULL);
	expect_proc("ql", ql, "rel.sock");
	expect_names("qc", qc, "", "rel.sock");
	expect_names("qa", qa, "rel.sock", "");
	echo_check("qc→qa", qc, qa);
	{
		char p[PATH_MAX + 16];
		int n = sock(SOCK_STREAM), m;

		snprintf(p, sizeof(p), "%s/rel.sock", case_workdir);
		do_connect(n, p);
		m = accept(ql, NULL, NULL);
		if (m < 0)
			case_fail("accept on rel.sock: %s", strerror(errno));
		echo_check("new client of rel.sock", n, m);
	}
	expect_names("qd", qd, "sub/rd.sock", NULL);
	{
		char buf[4];

		if (recv(qd, buf, sizeof(buf), MSG_DONTWAIT) != 1 || buf[0] != 'q')
			case_fail("qd: the queued datagram is lost");
		if (sendto(qs, "r", 1, 0, NULL, 0) == 1)
			case_fail("qs: connected?");
	}
	{
		struct sockaddr_un a;
		socklen_t al = addr(&a, "sub/rd.sock");
		char buf[4];

		if (sendto(qs, "s", 1, 0, (void *)&a, al) != 1 || recv(qd, buf, sizeof(buf), MSG_DONTWAIT) != 1)
			case_fail("sub/rd.sock: datagrams do not go through: %s", strerror(errno));
	}
	unlink("rel.sock");
	unlink("sub/rd.sock");
	rmdir("sub");

	expect_names("dl", dl, del, NULL);
	expect_proc("dl", dl, del);
	expect_names("dc", dc, del, "");
	expect_names("da", da, "", del);
	expect_names("dw", dw, "", del);
	expect_absent(del);
	echo_check("da→dc", da, dc);
	echo_check("dc→da", dc, da);
	{
		int w = accept(dl, NULL, NULL);

		if (w < 0)
			case_fail("accept the waiting client: %s", strerror(errno));
		echo_check("dw→accepted", dw, w);
	}

	expect_names("gd", gd, gdg, NULL);
	expect_proc("gd", gd, gdg);
	expect_names("gc", gc, "", gdg);
	expect_absent(gdir);
	{
		char buf[4];

		if (recv(gd, buf, sizeof(buf), MSG_DONTWAIT) != 1 || buf[0] != 'm')
			case_fail("gd: the queued datagram is lost");
	}
	if (send(gc, "n", 1, 0) != 1)
		case_fail("gc: send after restore: %s", strerror(errno));

	expect_names("rl", rl, re, NULL);
	expect_proc("rl", rl, re);
	{
		char buf[8] = "";
		struct stat st;

		if (lstat(re, &st) != 0 || !S_ISREG(st.st_mode) || case_read_file(re, buf, sizeof(buf)) != 4 || strcmp(buf, "file") != 0)
			case_fail("%s is no longer the regular file", re);
	}
	unlink(re);
	case_pass();
}

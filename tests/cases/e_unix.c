/*
 * e_unix: unix sockets of every kind in one process, with data in flight.
 *
 *   fd 40  stream listener bound to WORKDIR/ls.sock (mode 0640), backlog 8;
 *          two connections wait in its accept queue: 41 (sent "first
 *          client data") and 42 (sent "second" then "client")
 *   fd 43/44  an accepted connection of that listener: 43 client, 44
 *          server; "c0->a0" queued on 44, "a0->c0 reply" on 43
 *   fd 45  seqpacket listener on the abstract name @ctrcr-sp-PID, one
 *          waiting client 46 that sent the records "rec-one", "rec-two!!"
 *   fd 47  dgram server on @ctrcr-dg-PID with datagrams queued from 48
 *          (bound to @ctrcr-x-PID: "from-x-1", "from-x-2") and from the
 *          unbound 49 ("from-y")
 *   fd 50  dgram server bound to WORKDIR/gone.sock, then unlinked; 51 is
 *          connected to it and sent "to-gone"
 *   fd 52/53  stream socketpair: 52 sent "fds" with SCM_RIGHTS carrying a
 *          pipe read end (the pipe holds "pipe-data"; its write end is fd
 *          54) and WORKDIR/f.txt ("0123456789") opened at offset 4
 *   fd 55/56  dgram socketpair, 56 with SO_PASSCRED: 55 sent "cred-msg"
 *          with SCM_CREDENTIALS
 *   fd 57  an unbound unconnected dgram socket; fd 58 a stream socket
 *          bound to @ctrcr-v-PID, not listening
 *
 * After go every queue is read back exactly once, in order, with message
 * boundaries, sender addresses, credentials and working received fds; the
 * waiting connections are accepted in order; new data flows on each.
 */
#include "case.h"

#include <fcntl.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

static struct sockaddr_un addr_of(const char *name, socklen_t *len)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	size_t n = strlen(name);

	memcpy(a.sun_path, name, n);
	if (name[0] == '@')
		a.sun_path[0] = 0; /* abstract */
	*len = offsetof(struct sockaddr_un, sun_path) + n + (name[0] != '@');
	return a;
}

static int sock_at(int want, int type)
{
	int fd = socket(AF_UNIX, type, 0);

	if (fd < 0 || dup2(fd, want) != want)
		case_fail("socket -> %d: %s", want, strerror(errno));
	if (fd != want)
		close(fd);
	return want;
}

static void do_bind(int fd, const char *name)
{
	socklen_t l;
	struct sockaddr_un a = addr_of(name, &l);

	if (bind(fd, (struct sockaddr *)&a, l) < 0)
		case_fail("bind %s: %s", name, strerror(errno));
}

static void do_connect(int fd, const char *name)
{
	socklen_t l;
	struct sockaddr_un a = addr_of(name, &l);

	if (connect(fd, (struct sockaddr *)&a, l) < 0)
		case_fail("connect fd %d to %s: %s", fd, name, strerror(errno));
}

static void send_str(int fd, const char *s)
{
	if (send(fd, s, strlen(s), MSG_DONTWAIT) != (ssize_t)strlen(s))
		case_fail("send %s on fd %d: %s", s, fd, strerror(errno));
}

static void sendto_str(int fd, const char *s, const char *to)
{
	socklen_t l;
	struct sockaddr_un a = addr_of(to, &l);

	if (sendto(fd, s, strlen(s), MSG_DONTWAIT, (struct sockaddr *)&a, l) != (ssize_t)strlen(s))
		case_fail("sendto %s: %s", to, strerror(errno));
}

/* expect reads one message (or, on stream, exactly strlen(want) bytes). */
static void expect(int fd, const char *want)
{
	char buf[256];
	size_t n = strlen(want), got = 0;

	while (got < n) {
		ssize_t r = recv(fd, buf + got, sizeof(buf) - got, MSG_DONTWAIT);

		if (r <= 0)
			case_fail("fd %d: want %s, got %zu bytes then %zd (%s)", fd, want, got, r, strerror(errno));
		got += r;
		int type;
		socklen_t tl = sizeof(type);
		getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl);
		if (type != SOCK_STREAM)
			break;
	}
	if (got != n || memcmp(buf, want, n) != 0)
		case_fail("fd %d: got %.*s, want %s", fd, (int)got, buf, want);
}

static void expect_empty(int fd)
{
	char c;

	if (recv(fd, &c, 1, MSG_DONTWAIT) != -1 || errno != EAGAIN)
		case_fail("fd %d: more data queued than expected", fd);
}

static void expect_from(int fd, const char *want, const char *from)
{
	char buf[64];
	struct sockaddr_un a;
	socklen_t al = sizeof(a);
	ssize_t r = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&a, &al);

	if (r != (ssize_t)strlen(want) || memcmp(buf, want, r) != 0)
		case_fail("dgram: got %zd bytes, want %s", r, want);
	if (!from) {
		if (al > sizeof(sa_family_t))
			case_fail("dgram %s: sender has a name (len %u), want unbound", want, al);
		return;
	}
	socklen_t wl;
	struct sockaddr_un w = addr_of(from, &wl);
	if (al != wl || memcmp(&a, &w, wl) != 0)
		case_fail("dgram %s: wrong sender address (len %u, want %s)", want, al, from);
}

static void expect_name(int fd, const char *name, int peer)
{
	struct sockaddr_un a;
	socklen_t al = sizeof(a), wl;
	struct sockaddr_un w = addr_of(name, &wl);
	int r = peer ? getpeername(fd, (struct sockaddr *)&a, &al) : getsockname(fd, (struct sockaddr *)&a, &al);

	if (r < 0 || al != wl || memcmp(&a, &w, wl) != 0)
		case_fail("fd %d: %s name is not %s (len %u)", fd, peer ? "peer" : "sock", name, al);
}

static int accept_nb(int l)
{
	int fd = accept4(l, NULL, NULL, SOCK_NONBLOCK);

	if (fd < 0)
		case_fail("accept on fd %d: %s", l, strerror(errno));
	return fd;
}

int main(int argc, char **argv)
{
	char ls[PATH_MAX], gone[PATH_MAX], sp[64], dg[64], xn[64], vn[64];
	int pid = getpid();

	case_init(argc, argv);
	snprintf(ls, sizeof(ls), "%s/ls.sock", case_workdir);
	snprintf(gone, sizeof(gone), "%s/gone.sock", case_workdir);
	snprintf(sp, sizeof(sp), "@ctrcr-sp-%d", pid);
	snprintf(dg, sizeof(dg), "@ctrcr-dg-%d", pid);
	snprintf(xn, sizeof(xn), "@ctrcr-x-%d", pid);
	snprintf(vn, sizeof(vn), "@ctrcr-v-%d", pid);

	/* stream listener, one accepted connection, two waiting */
	sock_at(40, SOCK_STREAM);
	do_bind(40, ls);
	chmod(ls, 0640);
	if (listen(40, 8) < 0)
		case_fail("listen: %s", strerror(errno));
	sock_at(43, SOCK_STREAM);
	do_connect(43, ls);
	int a0 = accept(40, NULL, NULL);
	if (a0 < 0 || dup2(a0, 44) != 44)
		case_fail("accept: %s", strerror(errno));
	close(a0);
	sock_at(41, SOCK_STREAM);
	do_connect(41, ls);
	send_str(41, "first client data");
	sock_at(42, SOCK_STREAM);
	do_connect(42, ls);
	send_str(42, "second");
	send_str(42, "client");
	send_str(43, "c0->a0");
	send_str(44, "a0->c0 reply");

	/* seqpacket listener with a waiting client that sent records */
	sock_at(45, SOCK_SEQPACKET);
	do_bind(45, sp);
	if (listen(45, 4) < 0)
		case_fail("listen sp: %s", strerror(errno));
	sock_at(46, SOCK_SEQPACKET);
	do_connect(46, sp);
	send_str(46, "rec-one");
	send_str(46, "rec-two!!");

	/* dgram server with datagrams from a bound and an unbound sender */
	sock_at(47, SOCK_DGRAM);
	do_bind(47, dg);
	sock_at(48, SOCK_DGRAM);
	do_bind(48, xn);
	sock_at(49, SOCK_DGRAM);
	sendto_str(48, "from-x-1", dg);
	sendto_str(49, "from-y", dg);
	sendto_str(48, "from-x-2", dg);

	/* a dgram server whose path was deleted, with a connected client */
	sock_at(50, SOCK_DGRAM);
	do_bind(50, gone);
	sock_at(51, SOCK_DGRAM);
	do_connect(51, gone);
	send_str(51, "to-gone");
	unlink(gone);

	/* SCM_RIGHTS in flight: a pipe read end and a file at offset 4 */
	int p[2], pp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, p) < 0 || dup2(p[0], 52) < 0 || dup2(p[1], 53) < 0)
		case_fail("socketpair: %s", strerror(errno));
	close(p[0]);
	close(p[1]);
	if (pipe(pp) < 0 || write(pp[1], "pipe-data", 9) != 9 || dup2(pp[1], 54) < 0)
		case_fail("pipe: %s", strerror(errno));
	close(pp[1]);
	int ff = open("f.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (ff < 0 || write(ff, "0123456789", 10) != 10 || lseek(ff, 4, SEEK_SET) != 4)
		case_fail("f.txt: %s", strerror(errno));
	{
		char cbuf[CMSG_SPACE(2 * sizeof(int))] = { 0 };
		struct iovec iov = { "fds", 3 };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		int two[2] = { pp[0], ff };

		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(two));
		memcpy(CMSG_DATA(c), two, sizeof(two));
		if (sendmsg(52, &m, 0) != 3)
			case_fail("sendmsg SCM_RIGHTS: %s", strerror(errno));
	}
	close(pp[0]);
	close(ff);

	/* SCM_CREDENTIALS in flight on a dgram pair */
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, p) < 0 || dup2(p[0], 55) < 0 || dup2(p[1], 56) < 0)
		case_fail("socketpair dgram: %s", strerror(errno));
	close(p[0]);
	close(p[1]);
	int one = 1;
	setsockopt(56, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
	{
		char cbuf[CMSG_SPACE(sizeof(struct ucred))] = { 0 };
		struct iovec iov = { "cred-msg", 8 };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		struct ucred uc = { getpid(), getuid(), getgid() };

		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_CREDENTIALS;
		c->cmsg_len = CMSG_LEN(sizeof(uc));
		memcpy(CMSG_DATA(c), &uc, sizeof(uc));
		if (sendmsg(55, &m, 0) != 8)
			case_fail("sendmsg SCM_CREDENTIALS: %s", strerror(errno));
	}

	/* unconnected sockets */
	sock_at(57, SOCK_DGRAM);
	sock_at(58, SOCK_STREAM);
	do_bind(58, vn);

	case_ready();
	case_wait_go();

	/* the accepted connection: names and data both ways */
	expect(44, "c0->a0");
	expect(43, "a0->c0 reply");
	expect_name(44, ls, 0);
	expect_name(43, ls, 1);
	/* the waiting connections, in order, their data once */
	int c1 = accept_nb(40), c2 = accept_nb(40);
	expect(c1, "first client data");
	expect(c2, "secondclient");
	expect_empty(c1);
	expect_empty(c2);
	fcntl(40, F_SETFL, O_NONBLOCK);
	if (accept4(40, NULL, NULL, SOCK_NONBLOCK) != -1 || errno != EAGAIN)
		case_fail("a third connection waits on the listener");
	send_str(41, "more");
	expect(c1, "more");
	send_str(c2, "back");
	expect(42, "back");
	struct stat st;
	if (stat(ls, &st) < 0 || !S_ISSOCK(st.st_mode) || (st.st_mode & 07777) != 0640)
		case_fail("%s: mode %o, want socket 0640", ls, st.st_mode);

	/* seqpacket: the records keep their boundaries */
	int s1 = accept_nb(45);
	expect(s1, "rec-one");
	expect(s1, "rec-two!!");
	expect_empty(s1);
	expect_name(45, sp, 0);

	/* dgram: senders kept */
	expect_from(47, "from-x-1", xn);
	expect_from(47, "from-y", NULL);
	expect_from(47, "from-x-2", xn);
	expect_empty(47);
	expect_name(48, xn, 0);

	/* deleted path */
	expect(50, "to-gone");
	send_str(51, "after");
	expect(50, "after");
	expect_name(50, gone, 0);
	if (access(gone, F_OK) == 0 || errno != ENOENT)
		case_fail("%s exists again", gone);

	/* SCM_RIGHTS */
	{
		char buf[8], cbuf[CMSG_SPACE(2 * sizeof(int))];
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		ssize_t n = recvmsg(53, &m, MSG_DONTWAIT);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		int two[2];
		char data[16] = { 0 };

		if (n != 3 || memcmp(buf, "fds", 3) || !c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(two)))
			case_fail("SCM_RIGHTS message: n=%zd cmsg %p", n, (void *)c);
		memcpy(two, CMSG_DATA(c), sizeof(two));
		if (read(two[0], data, sizeof(data)) != 9 || memcmp(data, "pipe-data", 9))
			case_fail("received pipe: %s", data);
		if (write(54, "more", 4) != 4 || read(two[0], data, 4) != 4 || memcmp(data, "more", 4))
			case_fail("received pipe is not the pipe of fd 54");
		if (lseek(two[1], 0, SEEK_CUR) != 4)
			case_fail("received file offset %ld, want 4", (long)lseek(two[1], 0, SEEK_CUR));
		memset(data, 0, sizeof(data));
		if (read(two[1], data, sizeof(data)) != 6 || memcmp(data, "456789", 6))
			case_fail("received file read %s", data);
		expect_empty(53);
	}

	/* SCM_CREDENTIALS */
	{
		char buf[16], cbuf[CMSG_SPACE(sizeof(struct ucred))];
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		ssize_t n = recvmsg(56, &m, MSG_DONTWAIT);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		struct ucred uc;

		if (n != 8 || memcmp(buf, "cred-msg", 8) || !c || c->cmsg_type != SCM_CREDENTIALS)
			case_fail("SCM_CREDENTIALS message: n=%zd", n);
		memcpy(&uc, CMSG_DATA(c), sizeof(uc));
		if (uc.pid != getpid() || uc.uid != getuid())
			case_fail("credentials pid %d uid %d, want %d %d", uc.pid, uc.uid, getpid(), getuid());
	}

	/* unconnected */
	int type;
	socklen_t tl = sizeof(type);
	if (getsockopt(57, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_DGRAM)
		case_fail("fd 57 is not a dgram socket");
	expect_name(58, vn, 0);
	unlink(ls);
	case_pass();
}

/*
 * unixsk: a container init for TestRestore_UnixSocketPath. It listens on
 * the unix stream socket /run/app.sock (a path in the container), keeps a
 * connection to it open (client c, accepted end s), and a dgram socket
 * bound at /run/app.dgram with one datagram queued from a sender connected
 * to it by path. It writes /tmp/ready, then serves the listener: a client
 * sends "check N\n" and gets back "OK\n" or "FAIL: why\n" after these
 * checks, run from inside:
 *   - getsockname of the listener and of s, getpeername of c: the path;
 *   - the kept connection passes "ping N" from c to s and "pong N" back;
 *   - the dgram socket still has its name and the datagram queued before
 *     (then a new one is queued for the next check) from the sender,
 *     which still sends to it;
 *   - a new connect to /run/app.sock from inside is accepted and passes
 *     a byte both ways;
 *   - /run/app.sock is a socket file;
 *   - a dgram socket bound at /run/gone.sock, a name unlinked since,
 *     still has that name, and the path does not exist;
 *   - with "unixsk ext": a connection to /run/ext.sock, whose listener is
 *     outside the container's tree ("unixsk ext-server", an echo server
 *     started in the container's mount namespace), echoes "echo N".
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define PATH "/run/app.sock"
#define DPATH "/run/app.dgram"
#define GONE "/run/gone.sock"
#define EXT "/run/ext.sock"

static char why[256];

static int fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return -1;
}

static struct sockaddr_un addr(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};

	strncpy(a.sun_path, path, sizeof(a.sun_path) - 1);
	return a;
}

static int named(int fd, int peer, const char *want, const char *what)
{
	struct sockaddr_un a;
	socklen_t len = sizeof(a);
	int r;

	memset(&a, 0, sizeof(a));
	r = peer ? getpeername(fd, (struct sockaddr *)&a, &len) : getsockname(fd, (struct sockaddr *)&a, &len);
	if (r < 0)
		return fail("%s: %s", what, strerror(errno));
	if (len <= sizeof(sa_family_t) || strcmp(a.sun_path, want) != 0)
		return fail("%s is \"%s\", want %s", what, len > sizeof(sa_family_t) ? a.sun_path : "", want);
	return 0;
}

/* xfer sends msg on from and reads it on to (with a timeout). */
static int xfer(int from, int to, const char *msg, const char *what)
{
	char buf[64];
	struct pollfd p = {.fd = to, .events = POLLIN};
	ssize_t n;

	if (write(from, msg, strlen(msg)) != (ssize_t)strlen(msg))
		return fail("%s: write: %s", what, strerror(errno));
	if (poll(&p, 1, 2000) != 1)
		return fail("%s: nothing to read", what);
	n = read(to, buf, sizeof(buf) - 1);
	if (n < 0)
		return fail("%s: read: %s", what, strerror(errno));
	buf[n] = 0;
	if (strcmp(buf, msg) != 0)
		return fail("%s: read \"%s\", want \"%s\"", what, buf, msg);
	return 0;
}

static int l, c, s, d, ds, g, e = -1;

static int check(int n)
{
	char msg[32], buf[64];
	struct stat st;
	ssize_t r;
	int nc, na;

	if (named(l, 0, PATH, "listener's name") || named(s, 0, PATH, "accepted end's name") ||
	    named(c, 1, PATH, "client's peer name") || named(d, 0, DPATH, "dgram socket's name") ||
	    named(ds, 1, DPATH, "dgram sender's peer name"))
		return -1;
	snprintf(msg, sizeof(msg), "ping %d", n);
	if (xfer(c, s, msg, "client to server"))
		return -1;
	snprintf(msg, sizeof(msg), "pong %d", n);
	if (xfer(s, c, msg, "server to client"))
		return -1;
	r = recv(d, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	if (r < 0)
		return fail("queued datagram: %s", strerror(errno));
	buf[r] = 0;
	snprintf(msg, sizeof(msg), "queued %d", n - 1);
	if (strcmp(buf, msg) != 0)
		return fail("queued datagram \"%s\", want \"%s\"", buf, msg);
	snprintf(msg, sizeof(msg), "queued %d", n);
	if (send(ds, msg, strlen(msg), 0) < 0)
		return fail("queue a datagram: %s", strerror(errno));
	nc = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = addr(PATH);
	if (connect(nc, (struct sockaddr *)&a, sizeof(a)) < 0)
		return fail("new connect to %s: %s", PATH, strerror(errno));
	na = accept(l, NULL, NULL);
	if (na < 0)
		return fail("accept the new connection: %s", strerror(errno));
	if (xfer(nc, na, "x", "new connection") || xfer(na, nc, "y", "new connection back"))
		return -1;
	close(nc);
	close(na);
	if (stat(PATH, &st) < 0 || !S_ISSOCK(st.st_mode))
		return fail("%s is not a socket file", PATH);
	if (named(g, 0, GONE, "deleted name"))
		return -1;
	if (e >= 0) {
		if (named(e, 1, EXT, "external peer's name"))
			return -1;
		snprintf(msg, sizeof(msg), "echo %d", n);
		if (xfer(e, e, msg, "external echo"))
			return -1;
	}
	if (lstat(GONE, &st) == 0 || errno != ENOENT)
		return fail("%s exists again", GONE);
	return 0;
}

/* extServer echoes what each client sends, on EXT. */
static int extServer(void)
{
	struct sockaddr_un a = addr(EXT);
	struct pollfd p[16];
	int n = 1;

	unlink(EXT);
	p[0].fd = socket(AF_UNIX, SOCK_STREAM, 0);
	p[0].events = POLLIN;
	if (bind(p[0].fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(p[0].fd, 8) < 0) {
		perror("bind/listen " EXT);
		return 1;
	}
	for (;;) {
		if (poll(p, n, -1) < 0)
			continue;
		for (int i = n - 1; i > 0; i--) {
			char buf[256];
			ssize_t r;

			if (!p[i].revents)
				continue;
			r = read(p[i].fd, buf, sizeof(buf));
			if (r <= 0 || write(p[i].fd, buf, r) != r) {
				close(p[i].fd);
				p[i] = p[--n];
			}
		}
		if (p[0].revents & POLLIN) {
			int cl = accept(p[0].fd, NULL, NULL);

			if (cl >= 0 && n < 16) {
				p[n].fd = cl;
				p[n++].events = POLLIN;
			} else if (cl >= 0) {
				close(cl);
			}
		}
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_un a = addr(PATH), da = addr(DPATH), ga = addr(GONE), ea = addr(EXT);
	int fd;

	if (argc > 1 && strcmp(argv[1], "ext-server") == 0)
		return extServer();
	if (argc > 1 && strcmp(argv[1], "ext") == 0) {
		/* wait for the server the test starts beside the container */
		e = socket(AF_UNIX, SOCK_STREAM, 0);
		for (int i = 0; connect(e, (struct sockaddr *)&ea, sizeof(ea)) < 0; i++) {
			if (i == 1000) {
				perror("connect " EXT);
				return 1;
			}
			usleep(10000);
		}
	}

	unlink(PATH);
	unlink(DPATH);
	l = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 8) < 0) {
		perror("bind/listen " PATH);
		return 1;
	}
	c = socket(AF_UNIX, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&a, sizeof(a)) < 0 || (s = accept(l, NULL, NULL)) < 0) {
		perror("connect/accept");
		return 1;
	}
	d = socket(AF_UNIX, SOCK_DGRAM, 0);
	ds = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (bind(d, (struct sockaddr *)&da, sizeof(da)) < 0 || connect(ds, (struct sockaddr *)&da, sizeof(da)) < 0 ||
	    send(ds, "queued 0", 8, 0) < 0) {
		perror("dgram " DPATH);
		return 1;
	}
	g = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (bind(g, (struct sockaddr *)&ga, sizeof(ga)) < 0 || unlink(GONE) < 0) {
		perror("bind/unlink " GONE);
		return 1;
	}
	fd = open("/tmp/ready", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	close(fd);
	for (;;) {
		char req[64];
		int n = 0, cl = accept(l, NULL, NULL);
		ssize_t r;

		if (cl < 0)
			continue;
		r = read(cl, req, sizeof(req) - 1);
		if (r > 0) {
			req[r] = 0;
			if (sscanf(req, "check %d", &n) == 1) {
				if (check(n) == 0)
					dprintf(cl, "OK\n");
				else
					dprintf(cl, "FAIL: %s\n", why);
			} else {
				dprintf(cl, "FAIL: bad request\n");
			}
		}
		close(cl);
	}
}

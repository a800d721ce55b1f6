/*
 * e_shelljob_tty.c - a shell job holding its terminal through /dev/tty
 * (fd 10 O_RDWR|O_NONBLOCK, fd 11 O_WRONLY: two open file descriptions)
 * and two virtual consoles that are not its terminal (fd 12 /dev/tty1
 * O_RDONLY, fd 13 /dev/tty0 O_WRONLY), when this machine has them. The log
 * goes to WORKDIR/out. Each line read from the terminal is answered with
 * "echo:<line>"; "verify" checks from inside that every fd is the same
 * file (name, device, flags), that /dev/tty is the terminal of stdin (the
 * restorer's), writes "via-devtty " through fd 11 (then "bye" on stdout) and ends the case.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

struct want {
	int fd;
	const char *path;
	int flags;
	int have;
	char link[64];
	int fl;
	dev_t rdev;
};

static struct want fds[] = {
	{10, "/dev/tty", O_RDWR | O_NONBLOCK},
	{11, "/dev/tty", O_WRONLY},
	{12, "/dev/tty1", O_RDONLY},
	{13, "/dev/tty0", O_WRONLY},
};
#define NFDS (sizeof(fds) / sizeof(fds[0]))

static FILE *log_;

static void fail(const char *what, int fd)
{
	fprintf(log_, "FAIL: fd %d: %s (%s)\n", fd, what, strerror(errno));
	exit(1);
}

static void describe(struct want *w, char *link, int *fl, dev_t *rdev)
{
	char p[64];
	struct stat st;
	snprintf(p, sizeof(p), "/proc/self/fd/%d", w->fd);
	ssize_t n = readlink(p, link, 63);
	if (n < 0)
		fail("readlink", w->fd);
	link[n] = 0;
	*fl = fcntl(w->fd, F_GETFL);
	if (*fl < 0 || fstat(w->fd, &st))
		fail("fcntl/fstat", w->fd);
	*rdev = st.st_rdev;
}

static void verify(void)
{
	for (size_t i = 0; i < NFDS; i++) {
		struct want *w = &fds[i];
		char link[64];
		int fl;
		dev_t rdev;
		if (!w->have)
			continue;
		describe(w, link, &fl, &rdev);
		if (strcmp(link, w->link) || fl != w->fl || rdev != w->rdev) {
			fprintf(log_, "FAIL: fd %d is %s flags %#o rdev %u:%u, was %s flags %#o rdev %u:%u\n", w->fd,
				link, fl, major(rdev), minor(rdev), w->link, w->fl, major(w->rdev), minor(w->rdev));
			exit(1);
		}
	}
	unsigned a, b;
	if (ioctl(10, TIOCGDEV, &a) || ioctl(0, TIOCGDEV, &b))
		fail("TIOCGDEV", 10);
	if (a != b) {
		fprintf(log_, "FAIL: /dev/tty is terminal %#x, stdin %#x\n", a, b);
		exit(1);
	}
	if (fcntl(10, F_SETFL, O_RDWR) || !(fcntl(11, F_GETFL) & O_WRONLY))
		fail("fd 10 and 11 share their flags", 10);
	if (dprintf(11, "via-devtty ") < 0)
		fail("write", 11);
}

int main(int argc, char **argv)
{
	if (argc < 2 || chdir(argv[1]))
		return 2;
	log_ = fopen("out", "a");
	if (!log_)
		return 2;
	setvbuf(log_, NULL, _IOLBF, 0);
	for (size_t i = 0; i < NFDS; i++) {
		struct want *w = &fds[i];
		int fd = open(w->path, w->flags | O_NOCTTY);
		if (fd < 0) {
			if (i < 2 || (errno != ENOENT && errno != ENXIO && errno != ENODEV))
				fail(w->path, w->fd);
			fprintf(log_, "log: no virtual console %s here: %s\n", w->path, strerror(errno));
			continue;
		}
		if (dup2(fd, w->fd) != w->fd)
			fail("dup2", w->fd);
		close(fd);
		w->have = 1;
		describe(w, w->link, &w->fl, &w->rdev);
		fprintf(log_, "log: fd %d %s flags %#o\n", w->fd, w->link, w->fl);
	}
	fprintf(log_, "ready\n");
	char buf[256];
	for (;;) {
		ssize_t n = read(0, buf, sizeof(buf) - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			fail("read from the terminal", 0);
		buf[n] = 0;
		char *nl = strchr(buf, '\n');
		if (nl)
			*nl = 0;
		if (strcmp(buf, "verify") == 0) {
			verify();
			dprintf(1, "bye\n");
			fprintf(log_, "PASS\n");
			return 0;
		}
		dprintf(1, "echo:%s\n", buf);
	}
}

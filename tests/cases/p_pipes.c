/*
 * p_pipes: pipes whose open file descriptions differ, and pipes with
 * awkward queued data.
 *
 *   flags pipe    pipe(): the write end set O_NONBLOCK with fcntl; a second
 *                 read description (open /proc/self/fd/N, O_NONBLOCK) and a
 *                 second write description (O_APPEND set with fcntl) and a
 *                 read-write one (open O_RDWR); 5 bytes queued
 *   packet pipe   pipe2(O_DIRECT): messages of 1, 2, 3 and 4096 bytes queued
 *   full pipe     F_SETPIPE_SZ 1 MiB, write end O_NONBLOCK, filled to EAGAIN
 *                 with a deterministic stream, then opened a second time for
 *                 reading (/proc/self/fd/N)
 *
 * The flags pipe's inode is chowned to 1234:5678.
 *
 * After go: the flags pipe keeps its owner; every fd has exactly its F_GETFL value of before (so the
 * descriptions are separate again, with their own flags), all fds of a
 * pipe are the same pipe, the queued bytes come back exactly once (byte for
 * byte, then EAGAIN), the packet pipe returns one message per read, and the
 * full pipe keeps its size.
 */
#include "case.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#define FULL_SIZE (1 << 20)

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

struct fdrec {
	int fd;
	int flags;
	const char *name;
};

static struct fdrec recs[16];
static int nrecs;

static void track(int fd, const char *name)
{
	CHECK(fd >= 0, "%s: %s", name, strerror(errno));
	recs[nrecs].fd = fd;
	recs[nrecs].flags = fcntl(fd, F_GETFL);
	recs[nrecs].name = name;
	nrecs++;
}

static int reopen(int fd, int flags)
{
	char p[64];

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	return open(p, flags);
}

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 131 + (i >> 9) * 7 + 3);
}

static ino_t inode_of(int fd)
{
	struct stat st;

	CHECK(fstat(fd, &st) == 0, "fstat %d: %s", fd, strerror(errno));
	return st.st_ino;
}

static void expect_empty(int fd, const char *name)
{
	char c;
	int fl = fcntl(fd, F_GETFL);

	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	CHECK(read(fd, &c, 1) < 0 && errno == EAGAIN,
	      "%s: more data than was queued", name);
	fcntl(fd, F_SETFL, fl);
}

int main(int argc, char **argv)
{
	static unsigned char buf[FULL_SIZE];
	int a[2], pk[2], q[2], ar2, aw2, arw, qr2, i, n, avail;
	static const int msgs[] = { 1, 2, 3, 4096 };
	size_t total = 0, got;
	char small[16];

	case_init(argc, argv);

	/* flags pipe */
	CHECK(pipe(a) == 0, "pipe: %s", strerror(errno));
	CHECK(fcntl(a[1], F_SETFL, O_NONBLOCK) == 0, "F_SETFL: %s",
	      strerror(errno));
	ar2 = reopen(a[0], O_RDONLY | O_NONBLOCK);
	aw2 = reopen(a[1], O_WRONLY);
	CHECK(aw2 >= 0 && fcntl(aw2, F_SETFL, O_APPEND) == 0,
	      "reopen write end: %s", strerror(errno));
	CHECK(write(a[1], "hello", 5) == 5, "write: %s", strerror(errno));
	CHECK(fchown(a[0], 1234, 5678) == 0, "fchown: %s", strerror(errno));
	track(a[0], "flags pipe read end");
	track(a[1], "flags pipe write end");
	track(ar2, "flags pipe second read description");
	track(aw2, "flags pipe second write description");
	arw = reopen(a[0], O_RDWR);
	track(arw, "flags pipe read-write description");

	/* packet pipe */
	CHECK(pipe2(pk, O_DIRECT) == 0, "pipe2(O_DIRECT): %s", strerror(errno));
	for (i = 0; i < 4; i++) {
		memset(buf, 'a' + i, (size_t)msgs[i]);
		CHECK(write(pk[1], buf, (size_t)msgs[i]) == msgs[i],
		      "packet write: %s", strerror(errno));
	}
	track(pk[0], "packet pipe read end");
	track(pk[1], "packet pipe write end");

	/* full pipe, opened twice for reading */
	CHECK(pipe(q) == 0, "pipe: %s", strerror(errno));
	CHECK(fcntl(q[1], F_SETPIPE_SZ, FULL_SIZE) == FULL_SIZE,
	      "F_SETPIPE_SZ: %s", strerror(errno));
	CHECK(fcntl(q[1], F_SETFL, O_NONBLOCK) == 0, "F_SETFL: %s",
	      strerror(errno));
	for (;;) {
		unsigned char chunk[4096];
		ssize_t w;

		for (i = 0; i < (int)sizeof(chunk); i++)
			chunk[i] = pattern(total + (size_t)i);
		w = write(q[1], chunk, sizeof(chunk));
		if (w < 0 && errno == EAGAIN)
			break;
		CHECK(w > 0, "fill: %s", strerror(errno));
		total += (size_t)w;
	}
	qr2 = reopen(q[0], O_RDONLY);
	track(q[0], "full pipe read end");
	track(q[1], "full pipe write end");
	track(qr2, "full pipe second read description");
	case_log("full pipe holds %zu bytes", total);
	case_ready();

	case_wait_go();
	for (i = 0; i < nrecs; i++) {
		int fl = fcntl(recs[i].fd, F_GETFL);

		CHECK(fl == recs[i].flags, "%s (fd %d): flags %#o, want %#o",
		      recs[i].name, recs[i].fd, fl, recs[i].flags);
	}
	CHECK(inode_of(a[0]) == inode_of(a[1]) &&
		      inode_of(a[0]) == inode_of(ar2) &&
		      inode_of(a[0]) == inode_of(aw2) &&
		      inode_of(a[0]) == inode_of(arw),
	      "flags pipe: the fds are not one pipe");
	CHECK(inode_of(q[0]) == inode_of(qr2) && inode_of(q[0]) == inode_of(q[1]),
	      "full pipe: the fds are not one pipe");

	{
		struct stat st;

		CHECK(fstat(aw2, &st) == 0 && st.st_uid == 1234 &&
			      st.st_gid == 5678,
		      "flags pipe: owner %u:%u, want 1234:5678",
		      (unsigned)st.st_uid, (unsigned)st.st_gid);
	}
	n = (int)read(ar2, small, sizeof(small));
	CHECK(n == 5 && memcmp(small, "hello", 5) == 0,
	      "flags pipe: read %d bytes, want \"hello\"", n);
	expect_empty(a[0], "flags pipe");

	for (i = 0; i < 4; i++) {
		n = (int)read(pk[0], buf, sizeof(buf));
		CHECK(n == msgs[i], "packet %d: read %d bytes, want %d", i, n,
		      msgs[i]);
		CHECK(buf[0] == 'a' + i && buf[n - 1] == 'a' + i,
		      "packet %d: wrong contents", i);
	}
	expect_empty(pk[0], "packet pipe");

	CHECK(fcntl(q[0], F_GETPIPE_SZ) == FULL_SIZE, "full pipe: size %d",
	      fcntl(q[0], F_GETPIPE_SZ));
	CHECK(ioctl(q[0], FIONREAD, &avail) == 0 && (size_t)avail == total,
	      "full pipe: %d bytes queued, want %zu", avail, total);
	for (got = 0; got < total;) {
		ssize_t r = read(got % 2 ? qr2 : q[0], buf, 65536);
		size_t k;

		CHECK(r > 0, "full pipe: read at %zu: %s", got, strerror(errno));
		for (k = 0; k < (size_t)r; k++)
			CHECK(buf[k] == pattern(got + k),
			      "full pipe: byte %zu is wrong", got + k);
		got += (size_t)r;
	}
	expect_empty(qr2, "full pipe");
	case_pass();
}

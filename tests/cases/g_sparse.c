/*
 * g_sparse: a deleted sparse file keeps its holes, and a 10 GiB sparse
 * deleted file with a few KiB of data is carried under the default
 * --ghost-limit (1 MiB of data); a deleted file's inode flags come back.
 *
 * Setup: WORKDIR/sparse.dat truncated to 10 GiB, 100 bytes at 0, 4 KiB at
 * 5 GiB, 8 KiB at 8 GiB + 4 KiB and 10 bytes at the very end, unlinked;
 * WORKDIR/attr.dat with some data, opened again O_APPEND, unlinked, then
 * given the inode flags append-only and noatime (FS_IOC_SETFLAGS).
 *
 * After "go": size and st_blocks as before, the same sequence of
 * lseek(SEEK_DATA)/lseek(SEEK_HOLE) results, the data where it was and
 * zeros in a hole; attr.dat has the same inode flags and refuses an open
 * for writing that is not for appending.
 */
#define _GNU_SOURCE
#include "case.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#define GiB (1024LL * 1024 * 1024)
#define MAXSEG 64

/* segs fills out with the SEEK_DATA/SEEK_HOLE sequence of fd. */
static int segs(int fd, long long size, long long *out)
{
	int n = 0;
	long long off = 0;
	while (off < size && n + 2 <= MAXSEG) {
		long long d = lseek(fd, off, SEEK_DATA);
		if (d < 0)
			break;
		long long h = lseek(fd, d, SEEK_HOLE);
		CHECK(h > d, "SEEK_HOLE %lld at %lld", h, d);
		out[n++] = d;
		out[n++] = h;
		off = h;
	}
	return n;
}

static void put(int fd, long long off, size_t len, int seed)
{
	static char buf[8192];
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)(seed + i * 7);
	CHECK(pwrite(fd, buf, len, off) == (ssize_t)len, "pwrite at %lld", off);
}

static void check(int fd, long long off, size_t len, int seed)
{
	static char buf[8192];
	CHECK(pread(fd, buf, len, off) == (ssize_t)len, "pread at %lld", off);
	for (size_t i = 0; i < len; i++)
		CHECK(buf[i] == (char)(seed + i * 7), "data at %lld+%zu", off, i);
}

int main(int argc, char **argv)
{
	long long before[MAXSEG], after[MAXSEG];
	struct stat st0, st;
	const long long size = 10 * GiB;

	case_init(argc, argv);
	int fd = open("sparse.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0, "create: %s", strerror(errno));
	CHECK(ftruncate(fd, size) == 0, "ftruncate");
	put(fd, 0, 100, 1);
	put(fd, 5 * GiB, 4096, 2);
	put(fd, 8 * GiB + 4096, 8192, 3);
	put(fd, size - 10, 10, 4);
	CHECK(unlink("sparse.dat") == 0, "unlink");
	int nb = segs(fd, size, before);
	CHECK(lseek(fd, 4242, SEEK_SET) == 4242, "lseek");
	CHECK(fstat(fd, &st0) == 0, "fstat");
	case_log("sparse: %d data extents, %lld blocks", nb / 2,
		 (long long)st0.st_blocks);

	int af = open("attr.dat", O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(af >= 0, "create attr.dat");
	CHECK(write(af, "attrs", 5) == 5, "write attr.dat");
	int ap = open("attr.dat", O_WRONLY | O_APPEND);
	CHECK(ap >= 0, "open attr.dat for append: %s", strerror(errno));
	CHECK(unlink("attr.dat") == 0, "unlink attr.dat");
	int fl0 = 0;
	CHECK(ioctl(af, FS_IOC_GETFLAGS, &fl0) == 0, "FS_IOC_GETFLAGS: %s",
	      strerror(errno));
	int fl = fl0 | FS_APPEND_FL | FS_NOATIME_FL;
	CHECK(ioctl(af, FS_IOC_SETFLAGS, &fl) == 0, "FS_IOC_SETFLAGS: %s",
	      strerror(errno));
	CHECK(ioctl(af, FS_IOC_GETFLAGS, &fl) == 0, "FS_IOC_GETFLAGS");

	case_ready();
	case_wait_go();

	CHECK(fstat(fd, &st) == 0, "fstat");
	CHECK(st.st_nlink == 0 && st.st_size == size, "nlink %lu size %lld",
	      (unsigned long)st.st_nlink, (long long)st.st_size);
	CHECK(st.st_blocks == st0.st_blocks, "st_blocks %lld, were %lld",
	      (long long)st.st_blocks, (long long)st0.st_blocks);
	CHECK(lseek(fd, 0, SEEK_CUR) == 4242, "offset");
	int na = segs(fd, size, after);
	CHECK(na == nb, "%d data/hole offsets, were %d", na, nb);
	for (int i = 0; i < na; i++)
		CHECK(after[i] == before[i], "SEEK_%s #%d: %lld, was %lld",
		      i % 2 ? "HOLE" : "DATA", i / 2, after[i], before[i]);
	check(fd, 0, 100, 1);
	check(fd, 5 * GiB, 4096, 2);
	check(fd, 8 * GiB + 4096, 8192, 3);
	check(fd, size - 10, 10, 4);
	char z[16] = {1};
	CHECK(pread(fd, z, 16, 3 * GiB) == 16, "pread hole");
	for (int i = 0; i < 16; i++)
		CHECK(z[i] == 0, "hole not zero");

	int now = 0;
	CHECK(ioctl(af, FS_IOC_GETFLAGS, &now) == 0, "FS_IOC_GETFLAGS: %s",
	      strerror(errno));
	CHECK(now == fl, "inode flags %#x, were %#x", now, fl);
	char ro[64];
	snprintf(ro, sizeof ro, "/proc/self/fd/%d", af);
	CHECK(open(ro, O_WRONLY) < 0 && errno == EPERM,
	      "append-only file opened for writing without O_APPEND");
	CHECK(write(ap, "!", 1) == 1, "append: %s", strerror(errno));
	char buf[8];
	CHECK(pread(af, buf, 6, 0) == 6 && !memcmp(buf, "attrs!", 6),
	      "attr.dat contents");
	case_pass();
}

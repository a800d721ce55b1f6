/*
 * b_deleted: a file that was unlinked while open and mapped (a "ghost" file)
 * comes back with its contents, still unlinked.
 *
 * Setup: WORKDIR/ghost.dat with 64 KiB of pattern, opened O_RDWR (offset
 * 4242), mapped MAP_PRIVATE whole with one page changed in memory (COW), then
 * unlinked.
 *
 * After "go": readlink(/proc/self/fd/N) is "WORKDIR/ghost.dat (deleted)", the
 * name is not back in WORKDIR (no leftover of the restore), fstat says
 * nlink 0 and size 64 KiB, offset still 4242, contents intact via pread and
 * via the mapping (with the changed page still changed and not in the file),
 * the maps line is unchanged, and the file is still writable.
 */
#define _GNU_SOURCE
#include "case.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

/* CHECK fails the case (case_fail exits) unless cond holds. */
#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#define SIZE (64 * 1024)
#define CHANGED_PAGE 3

static unsigned char pat(unsigned seed, size_t i)
{
	return (unsigned char)(seed + i * 29 + (i >> 10));
}

static long mismatch(const unsigned char *p, size_t len, size_t base,
		     unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != pat(seed, base + i))
			return (long)(base + i);
	return -1;
}

/* "start-end perms offset path" of the maps line containing addr. */
static void maps_line(const void *addr, char *out, size_t size)
{
	char line[PATH_MAX + 128];
	FILE *f = fopen("/proc/self/maps", "r");
	CHECK(f, "open maps");
	out[0] = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e, off;
		char perms[8];
		int n = 0;
		if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %n", &s, &e, perms,
			   &off, &n) < 4 || n == 0)
			continue;
		if ((uintptr_t)addr < s || (uintptr_t)addr >= e)
			continue;
		line[strcspn(line, "\n")] = 0;
		snprintf(out, size, "%lx-%lx %s %lx %s", s, e, perms, off,
			 line + n);
	}
	fclose(f);
	CHECK(out[0], "no maps line for %p", addr);
}

int main(int argc, char **argv)
{
	static unsigned char buf[SIZE];
	char path[PATH_MAX], link[64], target[PATH_MAX + 32];
	char expect[PATH_MAX + 32], line_before[PATH_MAX + 128],
		line_now[PATH_MAX + 128];
	long pg = sysconf(_SC_PAGESIZE);

	case_init(argc, argv);
	snprintf(path, sizeof path, "%s/ghost.dat", argv[1]);

	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0, "create %s: %s", path, strerror(errno));
	for (size_t i = 0; i < SIZE; i++)
		buf[i] = pat(1, i);
	CHECK(write(fd, buf, SIZE) == SIZE, "write %s", path);
	CHECK(lseek(fd, 4242, SEEK_SET) == 4242, "lseek");
	unsigned char *map =
		mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	CHECK(map != MAP_FAILED, "mmap: %s", strerror(errno));
	memset(map + CHANGED_PAGE * pg, 0xAB, pg);
	CHECK(unlink(path) == 0, "unlink: %s", strerror(errno));

	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	snprintf(expect, sizeof expect, "%s (deleted)", path);
	maps_line(map, line_before, sizeof line_before);
	CHECK(strstr(line_before, "(deleted)"), "setup: maps line %s",
	      line_before);

	case_ready();
	case_wait_go();

	ssize_t n = readlink(link, target, sizeof target - 1);
	CHECK(n > 0, "readlink %s: %s", link, strerror(errno));
	target[n] = 0;
	CHECK(strcmp(target, expect) == 0, "fd %d is %s, expected %s", fd,
	      target, expect);
	CHECK(access(path, F_OK) != 0, "%s exists again", path);

	struct stat st;
	CHECK(fstat(fd, &st) == 0, "fstat: %s", strerror(errno));
	CHECK(st.st_nlink == 0, "st_nlink %lu", (unsigned long)st.st_nlink);
	CHECK(st.st_size == SIZE, "st_size %lld", (long long)st.st_size);
	CHECK(S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0600,
	      "mode %o", st.st_mode);
	CHECK(lseek(fd, 0, SEEK_CUR) == 4242, "offset %lld",
	      (long long)lseek(fd, 0, SEEK_CUR));
	CHECK((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR, "not O_RDWR");

	maps_line(map, line_now, sizeof line_now);
	CHECK(strcmp(line_now, line_before) == 0, "maps line %s, was %s",
	      line_now, line_before);

	/* contents through the fd: the original pattern everywhere */
	memset(buf, 0, SIZE);
	CHECK(pread(fd, buf, SIZE, 0) == SIZE, "pread: %s", strerror(errno));
	long off = mismatch(buf, SIZE, 0, 1);
	CHECK(off < 0, "file differs at %ld", off);

	/* contents through the private mapping: file + the changed page */
	for (long p = 0; p < SIZE / pg; p++) {
		if (p == CHANGED_PAGE) {
			for (long i = 0; i < pg; i++)
				CHECK(map[p * pg + i] == 0xAB,
				      "changed page lost at +%ld", i);
			continue;
		}
		off = mismatch(map + p * pg, pg, p * pg, 1);
		CHECK(off < 0, "mapping differs at %ld", off);
	}

	/* still writable, via write() at the offset and pwrite */
	CHECK(write(fd, "hello", 5) == 5, "write: %s", strerror(errno));
	CHECK(pwrite(fd, "world", 5, SIZE) == 5, "pwrite: %s", strerror(errno));
	CHECK(pread(fd, buf, 5, 4242) == 5 && !memcmp(buf, "hello", 5),
	      "write did not stick");
	CHECK(fstat(fd, &st) == 0 && st.st_size == SIZE + 5,
	      "size after append %lld", (long long)st.st_size);
	CHECK(pread(fd, buf, 5, SIZE) == 5 && !memcmp(buf, "world", 5),
	      "pwrite did not stick");
	case_pass();
}

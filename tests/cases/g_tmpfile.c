/*
 * g_tmpfile: files made with open(O_TMPFILE) (as MariaDB's InnoDB and
 * glibc's tmpfile() make them) come back as O_TMPFILEs of the same
 * directory.
 *
 * Setup: in WORKDIR, A = O_TMPFILE|O_RDWR mode 0640 with 10000 bytes of
 * pattern, offset 1234, mapped MAP_SHARED; B = O_TMPFILE|O_WRONLY|O_APPEND
 * with "abc"; C = A reopened read-only through /proc/self/fd (its own
 * offset, 77); T = tmpfile() with a line written and flushed.
 *
 * After "go": each fd reads as "<dir>/#<its inode> (deleted)", as the
 * kernel names an O_TMPFILE; nlink 0, mode, size, F_GETFL and offsets as
 * before; A and C one inode, B and T others; contents intact; the shared
 * mapping and the fds see each other's writes; A can be linked into
 * WORKDIR with linkat(AT_EMPTY_PATH), as an O_TMPFILE opened without
 * O_EXCL can.
 */
#define _GNU_SOURCE
#include "case.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#define SIZE 10000

static unsigned char pat(size_t i) { return (unsigned char)(i * 31 + 7); }

/* check_name: fd reads as "<dir>/#<ino> (deleted)". */
static void check_name(int fd, const char *dir)
{
	char link[64], target[PATH_MAX], want[PATH_MAX];
	struct stat st;

	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, target, sizeof target - 1);
	CHECK(n > 0, "readlink %s: %s", link, strerror(errno));
	target[n] = 0;
	CHECK(fstat(fd, &st) == 0, "fstat %d", fd);
	snprintf(want, sizeof want, "%s/#%lu (deleted)", dir,
		 (unsigned long)st.st_ino);
	CHECK(strcmp(target, want) == 0, "fd %d is %s, want %s", fd, target,
	      want);
	CHECK(st.st_nlink == 0, "fd %d: nlink %lu", fd,
	      (unsigned long)st.st_nlink);
}

int main(int argc, char **argv)
{
	static unsigned char buf[SIZE];
	const char *dir;
	struct stat sa, sb, sc, st;

	case_init(argc, argv);
	dir = argv[1];
	int a = open(dir, O_TMPFILE | O_RDWR, 0640);
	CHECK(a >= 0, "O_TMPFILE in %s: %s", dir, strerror(errno));
	CHECK(fchmod(a, 0640) == 0, "fchmod");
	for (size_t i = 0; i < SIZE; i++)
		buf[i] = pat(i);
	CHECK(write(a, buf, SIZE) == SIZE, "write A");
	CHECK(lseek(a, 1234, SEEK_SET) == 1234, "lseek A");
	unsigned char *map = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
				  MAP_SHARED, a, 0);
	CHECK(map != MAP_FAILED, "mmap: %s", strerror(errno));
	int b = open(dir, O_TMPFILE | O_WRONLY | O_APPEND, 0600);
	CHECK(b >= 0, "O_TMPFILE B: %s", strerror(errno));
	CHECK(write(b, "abc", 3) == 3, "write B");
	char p[64];
	snprintf(p, sizeof p, "/proc/self/fd/%d", a);
	int c = open(p, O_RDONLY);
	CHECK(c >= 0, "reopen A: %s", strerror(errno));
	CHECK(lseek(c, 77, SEEK_SET) == 77, "lseek C");
	FILE *tf = tmpfile();
	CHECK(tf, "tmpfile: %s", strerror(errno));
	fputs("tmpfile line\n", tf);
	fflush(tf);
	int t = fileno(tf);
	char tdir[PATH_MAX], target[PATH_MAX];
	snprintf(p, sizeof p, "/proc/self/fd/%d", t);
	ssize_t n = readlink(p, target, sizeof target - 1);
	CHECK(n > 0, "readlink tmpfile");
	target[n] = 0;
	strcpy(tdir, target);
	*strrchr(tdir, '/') = 0;
	int fla = fcntl(a, F_GETFL), flb = fcntl(b, F_GETFL),
	    flc = fcntl(c, F_GETFL), flt = fcntl(t, F_GETFL);
	case_log("A flags %o B %o C %o T %o (%s)", fla, flb, flc, flt, target);

	case_ready();
	case_wait_go();

	check_name(a, dir);
	check_name(b, dir);
	check_name(c, dir);
	check_name(t, tdir);
	CHECK(fcntl(a, F_GETFL) == fla, "A flags %o, were %o", fcntl(a, F_GETFL), fla);
	CHECK(fcntl(b, F_GETFL) == flb, "B flags %o, were %o", fcntl(b, F_GETFL), flb);
	CHECK(fcntl(c, F_GETFL) == flc, "C flags %o, were %o", fcntl(c, F_GETFL), flc);
	CHECK(fcntl(t, F_GETFL) == flt, "T flags %o, were %o", fcntl(t, F_GETFL), flt);
	CHECK(fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && fstat(c, &sc) == 0 &&
		      fstat(t, &st) == 0,
	      "fstat");
	CHECK(sa.st_ino == sc.st_ino, "A and C are different inodes");
	CHECK(sa.st_ino != sb.st_ino && sa.st_ino != st.st_ino, "inodes merged");
	CHECK((sa.st_mode & 07777) == 0640 && (sb.st_mode & 07777) == 0600,
	      "modes %o %o", sa.st_mode, sb.st_mode);
	CHECK(sa.st_size == SIZE && sb.st_size == 3 && st.st_size == 13,
	      "sizes %lld %lld %lld", (long long)sa.st_size,
	      (long long)sb.st_size, (long long)st.st_size);
	CHECK(lseek(a, 0, SEEK_CUR) == 1234, "A offset %lld",
	      (long long)lseek(a, 0, SEEK_CUR));
	CHECK(lseek(c, 0, SEEK_CUR) == 77, "C offset");
	CHECK(lseek(b, 0, SEEK_CUR) == 3, "B offset");
	memset(buf, 0, SIZE);
	CHECK(pread(c, buf, SIZE, 0) == SIZE, "pread C");
	for (size_t i = 0; i < SIZE; i++)
		CHECK(buf[i] == pat(i), "A differs at %zu", i);
	CHECK(pread(t, buf, 13, 0) == 13 && !memcmp(buf, "tmpfile line\n", 13),
	      "tmpfile contents");
	CHECK(map[5] == pat(5), "mapping contents");
	map[5] = 0xEE;
	CHECK(pread(c, buf, 1, 5) == 1 && buf[0] == 0xEE, "mapping not shared with the fd");
	CHECK(pwrite(a, "Z", 1, 6) == 1 && map[6] == 'Z', "fd write not seen in the mapping");
	CHECK(write(b, "d", 1) == 1 && fstat(b, &sb) == 0 && sb.st_size == 4,
	      "append B");
	char lpath[PATH_MAX];
	snprintf(lpath, sizeof lpath, "%s/linked", dir);
	CHECK(linkat(a, "", AT_FDCWD, lpath, AT_EMPTY_PATH) == 0,
	      "linkat(AT_EMPTY_PATH): %s", strerror(errno));
	CHECK(fstat(a, &sa) == 0 && sa.st_nlink == 1, "nlink after linkat");
	unlink(lpath);
	case_pass();
}

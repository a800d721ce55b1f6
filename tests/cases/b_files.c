/*
 * b_files: a table of file descriptors of every common kind survives with
 * the same numbers, offsets, flags and files behind them, and they all work.
 *
 *   rw     WORKDIR/data.bin O_RDWR|O_CLOEXEC, written, offset 12345
 *   ro     WORKDIR/data.bin opened again O_RDONLY (own offset 777)
 *   app    WORKDIR/log.txt O_WRONLY|O_APPEND, lseek'd to 0 while the file
 *          has grown through another fd: a write must still land at EOF
 *   dir    WORKDIR/sub O_DIRECTORY, used with openat() after restore
 *   null   /dev/null O_RDWR
 *   zero   /dev/zero O_RDONLY|O_CLOEXEC
 *   urand  /dev/urandom O_RDONLY|O_NONBLOCK
 *   fd 100 dup2(rw, 100): no FD_CLOEXEC, shares rw's offset
 *   path   WORKDIR/path.txt O_PATH
 *
 * Recorded per fd before "ready": lseek(fd, 0, SEEK_CUR) (or its errno),
 * F_GETFL & (O_ACCMODE|O_APPEND|O_NONBLOCK|O_PATH|O_DIRECTORY), F_GETFD,
 * st_dev/st_ino/st_mode/st_rdev; also the whole /proc/self/fd table
 * (fd -> readlink) and the cwd. After "go" all of it must be equal, and each
 * fd is used.
 */
#define _GNU_SOURCE
#include "case.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>

/* CHECK fails the case (case_fail exits) unless cond holds. */
#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#define DATA_LEN 20000
#define FL_MASK (O_ACCMODE | O_APPEND | O_NONBLOCK | O_PATH | O_DIRECTORY)

struct fdstate {
	const char *name;
	int fd;
	int std; /* 0..2: offset not compared (the case itself writes there) */
	off_t off;
	int off_errno;
	int fl, fdfl;
	struct stat st;
};

static struct fdstate fds[16];
static int nfds;

static unsigned char pat(size_t i) { return (unsigned char)(i * 13 + (i >> 9)); }

static void add(const char *name, int fd)
{
	CHECK(fd >= 0, "setup: open %s: %s", name, strerror(errno));
	fds[nfds].name = name;
	fds[nfds].fd = fd;
	fds[nfds].std = fd <= 2;
	nfds++;
}

static void snapshot(struct fdstate *s)
{
	errno = 0;
	s->off = lseek(s->fd, 0, SEEK_CUR);
	s->off_errno = s->off < 0 ? errno : 0;
	s->fl = fcntl(s->fd, F_GETFL);
	s->fdfl = fcntl(s->fd, F_GETFD);
	CHECK(s->fl >= 0 && s->fdfl >= 0, "fcntl %s (fd %d): %s", s->name,
	      s->fd, strerror(errno));
	s->fl &= FL_MASK;
	CHECK(fstat(s->fd, &s->st) == 0, "fstat %s (fd %d): %s", s->name,
	      s->fd, strerror(errno));
}

/* "fd -> target" of every open fd, one per line, ascending. */
static char *fd_table(void)
{
	static char out[8192];
	int present[1024] = {0};
	size_t len = 0;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;

	CHECK(d, "opendir /proc/self/fd: %s", strerror(errno));
	while ((de = readdir(d))) {
		int fd = atoi(de->d_name);
		if (de->d_name[0] != '.' && fd != dirfd(d) && fd < 1024)
			present[fd] = 1;
	}
	closedir(d);
	for (int fd = 0; fd < 1024; fd++) {
		char link[64], target[PATH_MAX];
		if (!present[fd])
			continue;
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		ssize_t n = readlink(link, target, sizeof target - 1);
		CHECK(n > 0, "readlink %s: %s", link, strerror(errno));
		target[n] = 0;
		len += snprintf(out + len, sizeof out - len, "%d -> %s\n", fd,
				target);
	}
	return out;
}

int main(int argc, char **argv)
{
	char path[PATH_MAX], cwd_before[PATH_MAX], cwd_now[PATH_MAX];
	unsigned char buf[DATA_LEN];
	const char *wd;

	case_init(argc, argv);
	wd = argv[1];

	add("stdin", 0);
	add("stdout", 1);
	add("stderr", 2);

	/* data.bin: O_RDWR (cloexec), written, positioned at 12345 */
	snprintf(path, sizeof path, "%s/data.bin", wd);
	int rw = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	add("rw data.bin", rw);
	for (size_t i = 0; i < DATA_LEN; i++)
		buf[i] = pat(i);
	CHECK(write(rw, buf, DATA_LEN) == DATA_LEN, "write data.bin");
	CHECK(lseek(rw, 12345, SEEK_SET) == 12345, "lseek");

	/* the same file again, read-only, its own offset */
	int ro = open(path, O_RDONLY);
	add("ro data.bin", ro);
	CHECK(read(ro, buf, 100) == 100, "read data.bin");
	CHECK(lseek(ro, 677, SEEK_CUR) == 777, "lseek ro");

	/* log.txt: O_APPEND fd at offset 0, while the file grew elsewhere */
	snprintf(path, sizeof path, "%s/log.txt", wd);
	int app = open(path, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, 0644);
	add("append log.txt", app);
	CHECK(write(app, "first line\n", 11) == 11, "write log.txt");
	int other = open(path, O_WRONLY);
	CHECK(other >= 0 && pwrite(other, buf, 1000, 11) == 1000,
	      "extend log.txt");
	close(other);
	CHECK(lseek(app, 0, SEEK_SET) == 0, "lseek append fd");

	/* a directory fd, used with openat() later */
	snprintf(path, sizeof path, "%s/sub", wd);
	CHECK(mkdir(path, 0755) == 0 || errno == EEXIST, "mkdir sub");
	int dir = open(path, O_RDONLY | O_DIRECTORY);
	add("dir sub", dir);
	int in = openat(dir, "inner.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(in >= 0 && write(in, "inner contents\n", 15) == 15,
	      "create sub/inner.txt");
	close(in);

	int null = open("/dev/null", O_RDWR);
	add("/dev/null", null);
	int zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	add("/dev/zero", zero);
	int urand = open("/dev/urandom", O_RDONLY | O_NONBLOCK);
	add("/dev/urandom", urand);

	CHECK(dup2(rw, 100) == 100, "dup2: %s", strerror(errno));
	add("dup2 of rw", 100);

	snprintf(path, sizeof path, "%s/path.txt", wd);
	int pf = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(pf >= 0, "create path.txt");
	close(pf);
	add("O_PATH path.txt", open(path, O_PATH));

	for (int i = 0; i < nfds; i++)
		snapshot(&fds[i]);
	/* sanity: the setup is what the checks below assume */
	CHECK(fds[3].fdfl == FD_CLOEXEC && fds[nfds - 2].fdfl == 0,
	      "setup: FD_CLOEXEC of rw/fd 100 not as intended");
	CHECK(fds[nfds - 1].fl & O_PATH, "setup: O_PATH not in F_GETFL");
	char *table_before = strdup(fd_table());
	CHECK(getcwd(cwd_before, sizeof cwd_before), "getcwd");
	struct stat log_before;
	CHECK(fstat(app, &log_before) == 0 && log_before.st_size == 1011,
	      "setup: log.txt size");

	case_ready();
	case_wait_go();

	/* cwd and the fd table */
	CHECK(getcwd(cwd_now, sizeof cwd_now) && !strcmp(cwd_now, cwd_before),
	      "cwd is %s, was %s", cwd_now, cwd_before);
	char *table_now = fd_table();
	CHECK(strcmp(table_before, table_now) == 0,
	      "fd table differs:\nbefore:\n%snow:\n%s", table_before,
	      table_now);

	/* per-fd state */
	for (int i = 0; i < nfds; i++) {
		struct fdstate was = fds[i], now = fds[i];
		snapshot(&now);
		const char *n = was.name;
		int fd = was.fd;
		if (!was.std)
			CHECK(now.off == was.off && now.off_errno == was.off_errno,
			      "%s (fd %d): offset %lld (errno %d), was %lld "
			      "(errno %d)",
			      n, fd, (long long)now.off, now.off_errno,
			      (long long)was.off, was.off_errno);
		CHECK(now.fl == was.fl, "%s (fd %d): F_GETFL %#o, was %#o", n,
		      fd, now.fl, was.fl);
		CHECK(now.fdfl == was.fdfl, "%s (fd %d): F_GETFD %d, was %d", n,
		      fd, now.fdfl, was.fdfl);
		CHECK(now.st.st_ino == was.st.st_ino &&
			      now.st.st_dev == was.st.st_dev,
		      "%s (fd %d): dev/ino %lx/%lu, was %lx/%lu", n, fd,
		      (unsigned long)now.st.st_dev,
		      (unsigned long)now.st.st_ino,
		      (unsigned long)was.st.st_dev,
		      (unsigned long)was.st.st_ino);
		CHECK(now.st.st_mode == was.st.st_mode &&
			      now.st.st_rdev == was.st.st_rdev,
		      "%s (fd %d): mode/rdev %o/%lx, was %o/%lx", n, fd,
		      now.st.st_mode, (unsigned long)now.st.st_rdev,
		      was.st.st_mode, (unsigned long)was.st.st_rdev);
	}

	/* rw and fd 100 share one offset; ro has its own */
	CHECK(lseek(rw, 500, SEEK_SET) == 500, "lseek rw");
	CHECK(lseek(100, 0, SEEK_CUR) == 500,
	      "fd 100 does not share rw's offset (at %lld)",
	      (long long)lseek(100, 0, SEEK_CUR));
	CHECK(lseek(100, 600, SEEK_SET) == 600, "lseek fd 100");
	CHECK(lseek(rw, 0, SEEK_CUR) == 600, "rw does not follow fd 100");
	CHECK(lseek(ro, 0, SEEK_CUR) == 777, "ro moved with rw");
	CHECK(read(100, buf, 10) == 10 && buf[0] == pat(600) &&
		      buf[9] == pat(609),
	      "read through fd 100: wrong data");
	CHECK(lseek(rw, 0, SEEK_CUR) == 610, "read on fd 100 did not move rw");
	CHECK(pwrite(rw, "XY", 2, 12345) == 2, "pwrite rw: %s", strerror(errno));
	CHECK(pread(ro, buf, 3, 12344) == 3 && buf[0] == pat(12344) &&
		      buf[1] == 'X' && buf[2] == 'Y',
	      "write through rw not visible through ro");
	CHECK(read(ro, buf, 3) == 3 && buf[0] == pat(777), "read ro");

	/* O_APPEND: the write lands at EOF although the offset was 0 */
	CHECK(write(app, "after\n", 6) == 6, "write append fd: %s",
	      strerror(errno));
	struct stat st;
	CHECK(fstat(app, &st) == 0 && st.st_size == log_before.st_size + 6,
	      "log.txt size %lld, expected %lld", (long long)st.st_size,
	      (long long)log_before.st_size + 6);
	snprintf(path, sizeof path, "%s/log.txt", wd);
	int lf = open(path, O_RDONLY);
	CHECK(lf >= 0 && pread(lf, buf, 11, 0) == 11 &&
		      !memcmp(buf, "first line\n", 11),
	      "append overwrote the start of log.txt");
	CHECK(pread(lf, buf, 6, log_before.st_size) == 6 &&
		      !memcmp(buf, "after\n", 6),
	      "append did not land at EOF");
	close(lf);

	/* directory fd */
	int infd = openat(dir, "inner.txt", O_RDONLY);
	CHECK(infd >= 0, "openat(dir fd, inner.txt): %s", strerror(errno));
	memset(buf, 0, 32);
	CHECK(read(infd, buf, 32) == 15 && !memcmp(buf, "inner contents\n", 15),
	      "inner.txt via dir fd: wrong contents");
	close(infd);

	/* character devices */
	CHECK(write(null, buf, 10) == 10, "write /dev/null");
	CHECK(read(null, buf, 10) == 0, "read /dev/null not EOF");
	memset(buf, 0xff, 4096);
	CHECK(read(zero, buf, 4096) == 4096, "read /dev/zero");
	for (int i = 0; i < 4096; i++)
		CHECK(buf[i] == 0, "/dev/zero gave %#x at %d", buf[i], i);
	unsigned char r1[64], r2[64];
	CHECK(read(urand, r1, 64) == 64 && read(urand, r2, 64) == 64,
	      "read /dev/urandom: %s", strerror(errno));
	CHECK(memcmp(r1, r2, 64) != 0, "/dev/urandom repeats itself");

	/* O_PATH fd: usable for fstatat, not for reading */
	CHECK(fstatat(fds[nfds - 1].fd, "", &st, AT_EMPTY_PATH) == 0 &&
		      st.st_ino == fds[nfds - 1].st.st_ino,
	      "fstatat(O_PATH fd)");
	CHECK(read(fds[nfds - 1].fd, buf, 1) < 0 && errno == EBADF,
	      "O_PATH fd is readable");

	case_pass();
}

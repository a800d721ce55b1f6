/*
 * l_locks: file locks of a two-process tree (plus a waiter) come back
 * (dumped with --file-locks). On WORKDIR/locks.dat:
 *   parent P: a shared flock (its open file is inherited by child C), a
 *     POSIX write lock on bytes 0-99 and a read lock on 200-299 (through
 *     fd px, dup'd once), an OFD write lock on 1000-1099;
 *   child C: a POSIX write lock on 500-599 through its own open file;
 *   child W: blocked in F_SETLKW for a write lock on 0-99 (P holds it);
 *   child X: blocked in flock(LOCK_EX) on its own open file.
 * After the restores, from inside: P's and C's fdinfo show their locks
 * with their pids; a checker forked after restore sees every conflict
 * with the right pid (F_GETLK, F_OFD_GETLK), no lock where there was none,
 * and flock LOCK_EX|LOCK_NB fails with EWOULDBLOCK while LOCK_SH works;
 * then the owners unlock (P, C) and a second checker finds the file free
 * (W and X got their locks once P let go of them, and exited).
 */
#include "case.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>

#define FILE_NAME "locks.dat"

static void setlk(int fd, int cmd, short type, off_t start, off_t len, const char *what)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };

	if (fcntl(fd, cmd, &fl))
		case_fail("%s: %s", what, strerror(errno));
}

/* getlk tests a lock of type on start/len from fd; returns the conflicting
 * lock's type and sets *pid. */
static short getlk(int fd, int cmd, short type, off_t start, off_t len, pid_t *pid)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };

	if (fcntl(fd, cmd, &fl))
		case_fail("F_GETLK: %s", strerror(errno));
	*pid = fl.l_pid;
	return fl.l_type;
}

/* expect fails the checker process with code when the test differs. */
static int check_conflict(int fd, int cmd, short type, off_t start, off_t len, short want, pid_t wpid, const char *what)
{
	pid_t pid = 0;
	short got = getlk(fd, cmd, type, start, len, &pid);

	if (got != want || (want != F_UNLCK && pid != wpid)) {
		printf("log: checker: %s: type %d pid %d, want %d pid %d\n", what, got, pid, want, wpid);
		fflush(stdout);
		return 1;
	}
	return 0;
}

/* checker runs in a process forked after restore, on its own open file. */
static int checker(int phase, pid_t p, pid_t c)
{
	int fd = open(FILE_NAME, O_RDWR), bad = 0;

	if (fd < 0)
		return 100;
	if (phase == 1) {
		bad |= check_conflict(fd, F_GETLK, F_WRLCK, 0, 100, F_WRLCK, p, "P write 0-99");
		bad |= check_conflict(fd, F_GETLK, F_RDLCK, 50, 1, F_WRLCK, p, "P write 0-99 vs read");
		bad |= check_conflict(fd, F_GETLK, F_WRLCK, 200, 100, F_RDLCK, p, "P read 200-299");
		bad |= check_conflict(fd, F_GETLK, F_RDLCK, 200, 100, F_UNLCK, 0, "P read 200-299 shared");
		bad |= check_conflict(fd, F_GETLK, F_WRLCK, 100, 100, F_UNLCK, 0, "100-199 free");
		bad |= check_conflict(fd, F_GETLK, F_WRLCK, 300, 200, F_UNLCK, 0, "300-499 free");
		bad |= check_conflict(fd, F_GETLK, F_WRLCK, 599, 1, F_WRLCK, c, "C write 500-599");
		bad |= check_conflict(fd, F_GETLK, F_WRLCK, 600, 400, F_UNLCK, 0, "600-999 free");
		bad |= check_conflict(fd, F_OFD_GETLK, F_RDLCK, 1000, 100, F_WRLCK, -1, "OFD write 1000-1099");
		bad |= check_conflict(fd, F_GETLK, F_WRLCK, 1099, 0, F_WRLCK, -1, "OFD vs POSIX");
		bad |= check_conflict(fd, F_GETLK, F_WRLCK, 1100, 0, F_UNLCK, 0, "1100-EOF free");
		if (flock(fd, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK) {
			printf("log: checker: flock LOCK_EX|LOCK_NB: %s, want EWOULDBLOCK\n", strerror(errno));
			bad = 1;
		}
		if (flock(fd, LOCK_SH | LOCK_NB)) {
			printf("log: checker: flock LOCK_SH|LOCK_NB: %s\n", strerror(errno));
			bad = 1;
		}
	} else {
		bad |= check_conflict(fd, F_GETLK, F_WRLCK, 200, 900, F_UNLCK, 0, "200-1099 free after unlock");
		bad |= check_conflict(fd, F_OFD_GETLK, F_WRLCK, 1000, 100, F_UNLCK, 0, "OFD free after unlock");
		if (flock(fd, LOCK_EX | LOCK_NB)) {
			printf("log: checker: flock LOCK_EX|LOCK_NB after unlock: %s\n", strerror(errno));
			bad = 1;
		}
	}
	fflush(stdout);
	return bad;
}

static void run_checker(int phase, pid_t p, pid_t c)
{
	int st;
	pid_t k = fork();

	if (k < 0)
		case_fail("fork checker: %s", strerror(errno));
	if (k == 0)
		_exit(checker(phase, p, c));
	if (waitpid(k, &st, 0) != k || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		case_fail("checker %d found wrong locks (status %#x)", phase, st);
}

/* fdinfo_has checks that /proc/self/fdinfo/fd has a lock line with text. */
static void fdinfo_has(int fd, const char *text)
{
	char path[64], buf[4096];

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (case_read_file(path, buf, sizeof(buf)) < 0)
		case_fail("read %s: %s", path, strerror(errno));
	if (!strstr(buf, text))
		case_fail("fdinfo of fd %d does not show \"%s\":\n%s", fd, text, buf);
}

static int wait_readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms) == 1;
}

int main(int argc, char **argv)
{
	int ffl, fpx, fpx2, fofd, cpipe[2], cgo[2], wpipe[2], xpipe[2], st;
	pid_t p = getpid(), c, w, x;
	char line[128], b;

	case_init(argc, argv);
	ffl = open(FILE_NAME, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (ffl < 0 || ftruncate(ffl, 4096))
		case_fail("create %s: %s", FILE_NAME, strerror(errno));
	fpx = open(FILE_NAME, O_RDWR);
	fofd = open(FILE_NAME, O_RDWR);
	if (fpx < 0 || fofd < 0 || pipe(cpipe) || pipe(cgo) || pipe(wpipe) || pipe(xpipe))
		case_fail("open: %s", strerror(errno));
	if (flock(ffl, LOCK_SH))
		case_fail("flock: %s", strerror(errno));
	setlk(fpx, F_SETLK, F_WRLCK, 0, 100, "P write 0-99");
	setlk(fpx, F_SETLK, F_RDLCK, 200, 100, "P read 200-299");
	fpx2 = dup(fpx);
	setlk(fofd, F_OFD_SETLK, F_WRLCK, 1000, 100, "OFD write 1000-1099");

	c = fork();
	if (c < 0)
		case_fail("fork: %s", strerror(errno));
	if (c == 0) {
		int fc = open(FILE_NAME, O_RDWR);

		setlk(fc, F_SETLK, F_WRLCK, 500, 100, "C write 500-599");
		if (write(cpipe[1], "r", 1) != 1)
			_exit(10);
		if (read(cgo[0], &b, 1) != 1) /* after restore, from P */
			_exit(11);
		snprintf(line, sizeof(line), "POSIX  ADVISORY  WRITE %d ", getpid());
		fdinfo_has(fc, line);
		fdinfo_has(fc, " 500 599");
		fdinfo_has(ffl, "FLOCK  ADVISORY  READ"); /* inherited open file */
		setlk(fc, F_SETLK, F_UNLCK, 500, 100, "C unlock");
		_exit(0);
	}
	if (read(cpipe[0], &b, 1) != 1)
		case_fail("child C did not start");

	w = fork();
	if (w < 0)
		case_fail("fork: %s", strerror(errno));
	if (w == 0) {
		int fw = open(FILE_NAME, O_RDWR);

		setlk(fw, F_SETLKW, F_WRLCK, 0, 100, "W write 0-99 (waiting)");
		if (write(wpipe[1], "g", 1) != 1)
			_exit(10);
		_exit(0);
	}
	/* wait until W sleeps in F_SETLKW: /proc/locks shows it blocked */
	snprintf(line, sizeof(line), "-> POSIX  ADVISORY  WRITE %d ", w);
	for (int i = 0;; i++) {
		char buf[16384];

		if (case_read_file("/proc/locks", buf, sizeof(buf)) > 0 && strstr(buf, line))
			break;
		if (i > 500)
			case_fail("W does not wait for the lock");
		case_sleep_ms(10);
	}
	x = fork();
	if (x < 0)
		case_fail("fork: %s", strerror(errno));
	if (x == 0) {
		int fx = open(FILE_NAME, O_RDWR);

		if (flock(fx, LOCK_EX))
			_exit(12);
		if (write(xpipe[1], "g", 1) != 1)
			_exit(10);
		_exit(0);
	}
	snprintf(line, sizeof(line), "-> FLOCK  ADVISORY  WRITE %d ", x);
	for (int i = 0;; i++) {
		char buf[16384];

		if (case_read_file("/proc/locks", buf, sizeof(buf)) > 0 && strstr(buf, line))
			break;
		if (i > 500)
			case_fail("X does not wait for the flock");
		case_sleep_ms(10);
	}
	case_log("P %d C %d W %d X %d", p, c, w, x);
	case_ready();
	case_wait_go();

	snprintf(line, sizeof(line), "FLOCK  ADVISORY  READ %d ", p);
	fdinfo_has(ffl, line);
	snprintf(line, sizeof(line), "POSIX  ADVISORY  WRITE %d ", p);
	fdinfo_has(fpx, line);
	fdinfo_has(fpx2, " 0 99");
	fdinfo_has(fpx, " 200 299");
	fdinfo_has(fofd, "OFDLCK ADVISORY  WRITE -1 ");
	fdinfo_has(fofd, " 1000 1099");
	run_checker(1, p, c);
	if (wait_readable(wpipe[0], 0))
		case_fail("W got its lock while P holds 0-99");
	if (wait_readable(xpipe[0], 0))
		case_fail("X got its flock while P holds a shared one");

	/* the owners unlock */
	if (write(cgo[1], "g", 1) != 1)
		case_fail("write to C: %s", strerror(errno));
	if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		case_fail("child C: status %#x", st);
	if (flock(ffl, LOCK_UN))
		case_fail("flock LOCK_UN: %s", strerror(errno));
	if (!wait_readable(xpipe[0], 5000))
		case_fail("X did not get its flock after P and C let go of it");
	if (waitpid(x, &st, 0) != x || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		case_fail("child X: status %#x", st);
	setlk(fofd, F_OFD_SETLK, F_UNLCK, 1000, 100, "OFD unlock");
	setlk(fpx, F_SETLK, F_UNLCK, 200, 100, "P unlock 200-299");
	setlk(fpx, F_SETLK, F_UNLCK, 0, 100, "P unlock 0-99");
	if (!wait_readable(wpipe[0], 5000))
		case_fail("W did not get its lock after P unlocked it");
	if (waitpid(w, &st, 0) != w || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		case_fail("child W: status %#x", st);
	run_checker(2, p, c);
	case_pass();
}

/*
 * a_sleep_read.c - threads blocked in syscalls survive dump/restore.
 *
 * State (before ready):
 *   - a pipe whose both ends the process holds, pipe size set to 128 KiB,
 *     no data queued;
 *   - thread "sleeper" in nanosleep(3 s) (CLOCK_MONOTONIC recorded before);
 *   - thread "reader" blocked in read() on the pipe's read end.
 * Both threads are seen inside their syscalls (/proc/self/task/T/syscall)
 * before "ready".
 *
 * Checks (after go): both fds are still the two ends of one pipe (same
 * inode, O_RDONLY/O_WRONLY, same pipe size), nothing queued; main writes "x":
 * the reader returns exactly that one byte and nothing more is readable;
 * the sleeper returns normally or with EINTR (then sleeps the remainder, as
 * a glibc-style retry), after >= 3 s in total and not absurdly late; both
 * threads finish.
 */
#include "case.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define SLEEP_NS 3000000000LL
#define PIPE_SIZE (128 * 1024)

static int rfd, wfd;
static pid_t sleeper_tid, reader_tid;
static long long sleep_t0, sleep_elapsed;
static int sleep_eintr, sleep_errno;
static volatile int sleeper_done;

static ssize_t read_n = -2;
static int read_errno;
static char read_buf[16];
static volatile int reader_done;

static void *sleeper(void *arg)
{
	struct timespec req = { SLEEP_NS / 1000000000LL, 0 }, rem;

	(void)arg;
	sleeper_tid = (pid_t)syscall(SYS_gettid);
	sleep_t0 = case_now();
	while (nanosleep(&req, &rem) != 0) {
		if (errno != EINTR) {
			sleep_errno = errno;
			break;
		}
		sleep_eintr++;
		req = rem;
	}
	sleep_elapsed = case_now() - sleep_t0;
	__atomic_store_n(&sleeper_done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void *reader(void *arg)
{
	(void)arg;
	reader_tid = (pid_t)syscall(SYS_gettid);
	read_n = read(rfd, read_buf, sizeof(read_buf));
	read_errno = errno;
	__atomic_store_n(&reader_done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

/* in_syscall reports whether thread tid is blocked in syscall nr with first
 * argument arg0 (arg0 < 0: any). */
static int in_syscall(pid_t tid, long nr, long arg0)
{
	char path[64], buf[256];
	long n;
	unsigned long a0;

	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
	if (case_read_file(path, buf, sizeof(buf)) <= 0)
		return 0;
	if (sscanf(buf, "%ld %lx", &n, &a0) != 2)
		return 0;
	return n == nr && (arg0 < 0 || (long)a0 == arg0);
}

static void join_by(pthread_t th, const char *name, long long deadline_ns)
{
	struct timespec ts;
	int err;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (deadline_ns - case_now()) / 1000000000LL + 1;
	err = pthread_timedjoin_np(th, NULL, &ts);
	if (err)
		case_fail("%s did not finish: %s", name, strerror(err));
}

int main(int argc, char **argv)
{
	pthread_t th_sleep, th_read;
	int pfd[2], avail;
	struct stat sr, sw, sr0;
	long long deadline, go_at;
	char extra;
	int psize0;

	case_init(argc, argv);
	if (pipe(pfd))
		case_fail("pipe: %s", strerror(errno));
	rfd = pfd[0];
	wfd = pfd[1];
	if (fcntl(wfd, F_SETPIPE_SZ, PIPE_SIZE) < 0)
		case_fail("F_SETPIPE_SZ: %s", strerror(errno));
	psize0 = fcntl(rfd, F_GETPIPE_SZ);
	fstat(rfd, &sr0);

	if (pthread_create(&th_sleep, NULL, sleeper, NULL) ||
	    pthread_create(&th_read, NULL, reader, NULL))
		case_fail("pthread_create");

	/* Wait until both threads sit in their syscalls. */
	deadline = case_now() + 2000000000LL;
	while (!(sleeper_tid && reader_tid &&
		 in_syscall(sleeper_tid, SYS_clock_nanosleep, -1) &&
		 in_syscall(reader_tid, SYS_read, rfd))) {
		if (case_now() > deadline)
			case_fail("threads not blocked in nanosleep/read");
		case_sleep_ms(1);
	}
	case_log("pipe %d/%d size %d, sleeper %d, reader %d", rfd, wfd, psize0,
		 sleeper_tid, reader_tid);
	case_ready();
	case_wait_go();
	go_at = case_now();

	/* The pipe is intact and empty, the reader still waits. */
	if (fstat(rfd, &sr) || fstat(wfd, &sw))
		case_fail("fstat pipe: %s", strerror(errno));
	if (!S_ISFIFO(sr.st_mode) || !S_ISFIFO(sw.st_mode) ||
	    sr.st_ino != sw.st_ino || sr.st_dev != sw.st_dev)
		case_fail("fds %d/%d are not the two ends of one pipe", rfd, wfd);
	if ((fcntl(rfd, F_GETFL) & O_ACCMODE) != O_RDONLY ||
	    (fcntl(wfd, F_GETFL) & O_ACCMODE) != O_WRONLY)
		case_fail("pipe access modes changed");
	if (fcntl(rfd, F_GETPIPE_SZ) != psize0)
		case_fail("pipe size %d, was %d", fcntl(rfd, F_GETPIPE_SZ), psize0);
	if (ioctl(rfd, FIONREAD, &avail) || avail != 0)
		case_fail("pipe holds %d bytes before the write", avail);
	if (reader_done)
		case_fail("reader returned before the write: %zd (%s)", read_n,
			  strerror(read_errno));

	if (write(wfd, "x", 1) != 1)
		case_fail("write: %s", strerror(errno));
	join_by(th_read, "reader", case_now() + 5000000000LL);
	if (read_n != 1 || read_buf[0] != 'x')
		case_fail("reader got %zd bytes (%s) '%c'", read_n,
			  read_n < 0 ? strerror(read_errno) : "ok",
			  read_n > 0 ? read_buf[0] : '?');
	fcntl(rfd, F_SETFL, O_NONBLOCK);
	if (read(rfd, &extra, 1) != -1 || errno != EAGAIN)
		case_fail("more data in the pipe after the byte");

	join_by(th_sleep, "sleeper", sleep_t0 + SLEEP_NS + 10000000000LL);
	if (sleep_errno)
		case_fail("nanosleep failed: %s", strerror(sleep_errno));
	case_log("slept %lld ms, %d EINTR", sleep_elapsed / 1000000, sleep_eintr);
	if (sleep_elapsed < SLEEP_NS)
		case_fail("slept only %lld ms of 3000", sleep_elapsed / 1000000);
	if (sleep_elapsed > (go_at - sleep_t0) + SLEEP_NS + 2000000000LL)
		case_fail("slept %lld ms, far beyond go + 3 s",
			  sleep_elapsed / 1000000);
	case_pass();
}

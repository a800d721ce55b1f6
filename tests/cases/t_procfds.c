/*
 * t_procfds: fds on /proc files of the tree's own tasks.
 *
 *   R   case root, with a second thread T; holds
 *         a: /proc/C/status          (its child's)
 *         b: /proc/self/status       (its own, opened through self)
 *         c: /proc/self/task/T/stat  (its own thread's)
 *   `-- C   sleeps until told to exit
 *
 * After go, R reads every fd from offset 0: a shows C's pid, b R's pid,
 * c starts with T's tid; the offsets of the fds are unchanged.
 */
#include "t_tree.h"

#include <pthread.h>
#include <sys/syscall.h>

static volatile pid_t t_tid;
static volatile int quit;

static void *thread_main(void *arg)
{
	(void)arg;
	t_tid = syscall(SYS_gettid);
	while (!quit)
		case_sleep_ms(5);
	return NULL;
}

static void check_fd(int fd, const char *want, const char *what)
{
	char buf[4096];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	CHECK(n > 0, "%s: pread: %s", what, strerror(errno));
	buf[n] = 0;
	CHECK(strstr(buf, want) != NULL, "%s: %.60s... lacks \"%s\"", what, buf,
	      want);
}

int main(int argc, char **argv)
{
	char path[128], want_a[64], want_b[64], want_c[64];
	int a, b, c, p[2];
	pthread_t th;
	pid_t root, ch, pids[2];

	case_init(argc, argv);
	root = getpid();
	tt_pipe(p);
	ch = tt_fork();
	if (ch == 0) {
		char x;

		close(p[1]);
		while (read(p[0], &x, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	close(p[0]);
	CHECK(pthread_create(&th, NULL, thread_main, NULL) == 0, "pthread");
	while (!t_tid)
		case_sleep_ms(1);
	snprintf(path, sizeof(path), "/proc/%d/status", (int)ch);
	a = open(path, O_RDONLY);
	b = open("/proc/self/status", O_RDONLY);
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)t_tid);
	c = open(path, O_RDONLY);
	CHECK(a >= 0 && b >= 0 && c >= 0, "open: %s", strerror(errno));
	CHECK(lseek(b, 7, SEEK_SET) == 7, "lseek");
	snprintf(want_a, sizeof(want_a), "\nPid:\t%d\n", (int)ch);
	snprintf(want_b, sizeof(want_b), "\nPid:\t%d\n", (int)root);
	snprintf(want_c, sizeof(want_c), "%d (", (int)t_tid);
	check_fd(a, want_a, "child's status");
	check_fd(b, want_b, "own status");
	check_fd(c, want_c, "thread's stat");
	pids[0] = root;
	pids[1] = ch;
	tt_write_tree(pids, 2);
	case_ready();

	case_wait_go();
	check_fd(a, want_a, "child's status");
	check_fd(b, want_b, "own status");
	check_fd(c, want_c, "thread's stat");
	CHECK(lseek(b, 0, SEEK_CUR) == 7, "own status: offset %ld, want 7",
	      (long)lseek(b, 0, SEEK_CUR));
	quit = 1;
	pthread_join(th, NULL);
	close(p[1]);
	tt_expect_exit(ch, 0, "C");
	tt_no_children();
	case_pass();
}

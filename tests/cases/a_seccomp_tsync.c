/*
 * a_seccomp_tsync: a filter installed with SECCOMP_FILTER_FLAG_TSYNC in a
 * multi-threaded task.
 *
 * Three threads exist (main, T1, T2) when main, with no_new_privs, installs
 * filter F1 (uname -> EPERM) with TSYNC: all three share it. T1 then adds
 * filter F2 (sysinfo -> EDOM) alone, with SECCOMP_FILTER_FLAG_LOG.
 *
 * After the restores, from inside: uname gives EPERM in every thread,
 * sysinfo EDOM in T1 only; Seccomp_filters of /proc/self/task/T/status is
 * 1, 2, 1. A TSYNC install by main fails with the id of a thread whose
 * chain does not descend from main's: T1 (its own F2) before the dump, and
 * T1 again after. Once T1 has ended, a TSYNC install (F3, getpriority ->
 * ENOSYS) by main must succeed and reach T2 -- it would fail with T2's id
 * if the shared F1 had come back as separate per-thread copies. A forked
 * helper reads T1's filter flags (PTRACE_SECCOMP_GET_METADATA, which
 * numbers filters from the first installed): none on F1, LOG on F2, before
 * the dump and after the restores -- this also checks their order.
 */
#include "case.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#define LD_NR BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))
#define RET(v) BPF_STMT(BPF_RET | BPF_K, (v))

static long install(int nr, int err, unsigned flags)
{
	struct sock_filter f[] = {
		LD_NR,
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		RET(SECCOMP_RET_ERRNO | err),
		RET(SECCOMP_RET_ALLOW),
	};
	struct sock_fprog p = { 4, f };

	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &p);
}

static pthread_barrier_t bar;
static pid_t tids[3];
static volatile int t2_quit;
static pid_t helper_pid;

static int nfilters(pid_t tid)
{
	char path[64], buf[4096], *p;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
	if (case_read_file(path, buf, sizeof(buf)) < 0) {
		case_log("%s: %s", path, strerror(errno));
		return -1;
	}
	p = strstr(buf, "Seccomp_filters:");
	return p ? atoi(p + 16) : -1;
}

/* The helper is forked before any filter exists (a filtered task may not
 * read filter metadata): it reads a tid from req, seizes that thread and
 * answers (flags of its filter 0) * 16 + (flags of filter 1), or 100+
 * (filter 0 is the first installed). */
static int req[2], ans[2];

static void helper(void)
{
	struct {
		unsigned long long off, flags;
	} md[2];
	pid_t t;
	int st, k, r;

	close(req[1]);
	close(ans[0]);
	while (read(req[0], &t, sizeof(t)) == sizeof(t)) {
		r = 100;
		if (ptrace(PTRACE_SEIZE, t, 0, 0) == 0) {
			r = 101;
			if (ptrace(PTRACE_INTERRUPT, t, 0, 0) == 0 &&
			    waitpid(t, &st, __WALL) == t) {
				r = 0;
				for (k = 0; k < 2; k++) {
					md[k].off = k;
					md[k].flags = 0;
					if (ptrace(0x420d, t, (void *)sizeof(md[k]),
						   &md[k]) < 0)
						r = 102;
				}
				if (!r)
					r = (int)(md[0].flags * 16 + md[1].flags);
			}
			ptrace(PTRACE_DETACH, t, 0, 0);
		}
		if (write(ans[1], &r, sizeof(r)) != sizeof(r))
			break;
	}
	_exit(0);
}

static long filter_flags(pid_t t)
{
	int r;

	if (write(req[1], &t, sizeof(t)) != sizeof(t) ||
	    read(ans[0], &r, sizeof(r)) != sizeof(r))
		return -1;
	return r;
}

static void check_self(int i, const char *when)
{
	struct utsname u;
	struct sysinfo si;

	errno = 0;
	CHECK(uname(&u) == -1 && errno == EPERM, "%s: thread %d: uname: %s",
	      when, i, strerror(errno));
	errno = 0;
	if (i == 1)
		CHECK(sysinfo(&si) == -1 && errno == EDOM,
		      "%s: thread %d: sysinfo: %s", when, i, strerror(errno));
	else
		CHECK(sysinfo(&si) == 0, "%s: thread %d: sysinfo: %s", when, i,
		      strerror(errno));
}

static void *thread_main(void *arg)
{
	int i = (int)(long)arg;

	tids[i] = syscall(SYS_gettid);
	pthread_barrier_wait(&bar); /* 1: all exist */
	pthread_barrier_wait(&bar); /* 2: F1 installed */
	if (i == 1)
		CHECK(install(SYS_sysinfo, EDOM, SECCOMP_FILTER_FLAG_LOG) == 0, "F2: %s",
		      strerror(errno));
	check_self(i, "before");
	pthread_barrier_wait(&bar); /* 3: set up */
	pthread_barrier_wait(&bar); /* 4: go */
	check_self(i, "after restore");
	pthread_barrier_wait(&bar); /* 5: checked */
	pthread_barrier_wait(&bar); /* 6: main read our status */
	while (i == 2 && !t2_quit)
		case_sleep_ms(2);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t th[3];
	long r1, r2;
	int e1, e2;

	case_init(argc, argv);
	CHECK(pipe(req) == 0 && pipe(ans) == 0, "pipe");
	helper_pid = fork();
	CHECK(helper_pid >= 0, "fork");
	if (helper_pid == 0)
		helper();
	pthread_barrier_init(&bar, NULL, 3);
	tids[0] = syscall(SYS_gettid);
	CHECK(pthread_create(&th[1], NULL, thread_main, (void *)1L) == 0 &&
		      pthread_create(&th[2], NULL, thread_main, (void *)2L) == 0,
	      "pthread_create");
	pthread_barrier_wait(&bar);
	CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "nnp");
	CHECK(install(SYS_uname, EPERM, SECCOMP_FILTER_FLAG_TSYNC) == 0,
	      "F1 with TSYNC: %s", strerror(errno));
	pthread_barrier_wait(&bar);
	check_self(0, "before");
	pthread_barrier_wait(&bar);
	CHECK(nfilters(tids[0]) == 1 && nfilters(tids[1]) == 2 &&
		      nfilters(tids[2]) == 1,
	      "filters before: %d %d %d", nfilters(tids[0]), nfilters(tids[1]),
	      nfilters(tids[2]));
	CHECK(filter_flags(tids[1]) == SECCOMP_FILTER_FLAG_LOG,
	      "T1 filter flags before: %ld", filter_flags(tids[1]));
	/* TSYNC now fails on T1 (its F2 is not in main's chain): the
	 * kernel returns T1's tid. Probing it does not change anything. */
	r1 = install(SYS_getpriority, ENOSYS, SECCOMP_FILTER_FLAG_TSYNC);
	e1 = errno;
	case_log("TSYNC probe before: %ld (errno %d), T1 %d", r1, e1,
		 (int)tids[1]);
	CHECK(r1 == tids[1], "TSYNC probe before: %ld, want T1's tid %d", r1,
	      (int)tids[1]);
	case_ready();

	case_wait_go();
	pthread_barrier_wait(&bar);
	check_self(0, "after restore");
	pthread_barrier_wait(&bar);
	CHECK(nfilters(tids[0]) == 1 && nfilters(tids[1]) == 2 &&
		      nfilters(tids[2]) == 1,
	      "filters after: %d %d %d", nfilters(tids[0]), nfilters(tids[1]),
	      nfilters(tids[2]));
	CHECK(filter_flags(tids[1]) == SECCOMP_FILTER_FLAG_LOG,
	      "T1 filter flags after restore: %ld (F1 then F2 with LOG: %d)",
	      filter_flags(tids[1]), SECCOMP_FILTER_FLAG_LOG);
	r2 = install(SYS_getpriority, ENOSYS, SECCOMP_FILTER_FLAG_TSYNC);
	e2 = errno;
	CHECK(r2 == r1, "TSYNC probe after restore: %ld (errno %d), want %ld",
	      r2, e2, r1);
	pthread_barrier_wait(&bar);
	/* T1 leaves the chain question: with T1 gone, TSYNC from main must
	 * reach T2, which shares F1 with main. */
	pthread_join(th[1], NULL);
	r2 = install(SYS_getpriority, ENOSYS, SECCOMP_FILTER_FLAG_TSYNC);
	CHECK(r2 == 0, "TSYNC after T1 ended: %ld %s (T2 %d does not share main's filter)",
	      r2, strerror(errno), (int)tids[2]);
	errno = 0;
	CHECK(getpriority(PRIO_PROCESS, 0) == -1 && errno == ENOSYS,
	      "F3: getpriority: %s", strerror(errno));
	CHECK(nfilters(tids[2]) == 2, "T2 has %d filters after TSYNC, want 2",
	      nfilters(tids[2]));
	t2_quit = 1;
	pthread_join(th[2], NULL);
	close(req[1]);
	waitpid(helper_pid, NULL, 0);
	case_pass();
}

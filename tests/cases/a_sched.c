/*
 * a_sched: per-thread scheduling state and per-process OOM/audit state.
 *
 *   main  SCHED_OTHER nice 5, ioprio best-effort level 3
 *   T1    SCHED_BATCH nice -3, ioprio idle
 *   T2    SCHED_IDLE (nice 7 kept underneath), ioprio best-effort 7
 *   T3    SCHED_FIFO rt priority 10 | SCHED_RESET_ON_FORK, nice 4 underneath,
 *         ioprio none (class 0)
 *   T4    SCHED_RR rt priority 5, ioprio real-time level 2
 *   audit loginuid (when audit is built): 4242 set by main before the
 *         threads exist (they inherit it), T4 sets its own to 4343
 *   process: oom_score_adj 400,
 *            session autogroup nice 3 (when the case leads its session and
 *            autogroups are built)
 *
 * Every thread records its own sched_getattr, getpriority and ioprio_get
 * (by its own tid) before ready and checks them again after the restores;
 * the main thread checks /proc/self/oom_score_adj and /proc/self/loginuid.
 */
#include "case.h"

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

struct sattr {
	uint32_t size, policy;
	uint64_t flags;
	int32_t nice;
	uint32_t prio;
	uint64_t runtime, deadline, period;
	uint32_t umin, umax;
};

#define IOPRIO(cls, lvl) (((cls) << 13) | (lvl))

struct want {
	int policy, prio, nice, reset, ioprio;
};

static const struct want wants[5] = {
	{ SCHED_OTHER, 0, 5, 0, IOPRIO(2, 3) },
	{ SCHED_BATCH, 0, -3, 0, IOPRIO(3, 0) },
	{ SCHED_IDLE, 0, 7, 0, IOPRIO(2, 7) },
	{ SCHED_FIFO, 10, 4, 1, 0 },
	{ SCHED_RR, 5, 0, 0, IOPRIO(1, 2) },
};

static pthread_barrier_t bar;
static volatile int done;
static int have_loginuid;

/* thread_loginuid reads the calling thread's own loginuid. */
static long thread_loginuid(void)
{
	char buf[64];

	if (case_read_file("/proc/thread-self/loginuid", buf, sizeof(buf)) < 0)
		return -1;
	return strtol(buf, NULL, 10);
}

/* check_self compares the calling thread's state with w. */
static void check_self(int i, const char *when)
{
	const struct want *w = &wants[i];
	pid_t tid = syscall(SYS_gettid);
	struct sattr a = { 0 };
	long io;
	int nice;

	CHECK(syscall(SYS_sched_getattr, tid, &a, sizeof(a), 0) == 0,
	      "%s: thread %d: sched_getattr: %s", when, i, strerror(errno));
	CHECK((int)a.policy == w->policy, "%s: thread %d: policy %u, want %d",
	      when, i, a.policy, w->policy);
	CHECK((int)a.prio == w->prio, "%s: thread %d: rt priority %u, want %d",
	      when, i, a.prio, w->prio);
	CHECK(!!(a.flags & 1) == w->reset,
	      "%s: thread %d: sched flags %#llx, want reset-on-fork %d", when,
	      i, (unsigned long long)a.flags, w->reset);
	errno = 0;
	nice = getpriority(PRIO_PROCESS, tid);
	CHECK(errno == 0 && nice == w->nice, "%s: thread %d: nice %d, want %d",
	      when, i, nice, w->nice);
	io = syscall(SYS_ioprio_get, 1, tid);
	CHECK(io == w->ioprio, "%s: thread %d: ioprio %#lx, want %#x", when, i,
	      io, w->ioprio);
	if (have_loginuid)
		CHECK(thread_loginuid() == (i == 4 ? 4343 : 4242),
		      "%s: thread %d: loginuid %ld, want %d", when, i,
		      thread_loginuid(), i == 4 ? 4343 : 4242);
}

static void set_self(int i)
{
	const struct want *w = &wants[i];
	pid_t tid = syscall(SYS_gettid);
	struct sattr a = { .size = sizeof(a) };

	CHECK(setpriority(PRIO_PROCESS, tid, w->nice) == 0,
	      "thread %d: setpriority: %s", i, strerror(errno));
	a.policy = w->policy;
	a.prio = w->prio;
	a.flags = w->reset ? 1 : 0;
	a.nice = w->nice;
	CHECK(syscall(SYS_sched_setattr, tid, &a, 0) == 0,
	      "thread %d: sched_setattr: %s", i, strerror(errno));
	CHECK(syscall(SYS_ioprio_set, 1, tid, w->ioprio) == 0,
	      "thread %d: ioprio_set: %s", i, strerror(errno));
	if (have_loginuid && i == 4) {
		FILE *f = fopen("/proc/thread-self/loginuid", "w");

		CHECK(f && fprintf(f, "4343") > 0 && fclose(f) == 0,
		      "thread 4: loginuid: %s", strerror(errno));
	}
	check_self(i, "before");
}

static void *thread_main(void *arg)
{
	int i = (int)(intptr_t)arg;

	set_self(i);
	pthread_barrier_wait(&bar);
	pthread_barrier_wait(&bar); /* main: after go */
	check_self(i, "after restore");
	pthread_barrier_wait(&bar);
	return NULL;
}

/* autogroup_nice returns the nice of /proc/self/autogroup, or -100. */
static int autogroup_nice(void)
{
	char buf[128], *p;

	if (case_read_file("/proc/self/autogroup", buf, sizeof(buf)) <= 0)
		return -100;
	p = strstr(buf, " nice ");
	return p ? atoi(p + 6) : -100;
}

static long read_num(const char *path)
{
	char buf[64];

	if (case_read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	return strtol(buf, NULL, 10);
}

int main(int argc, char **argv)
{
	pthread_t th[5];
	int i, have_ag;
	FILE *f;

	case_init(argc, argv);
	pthread_barrier_init(&bar, NULL, 5);
	f = fopen("/proc/self/oom_score_adj", "w");
	CHECK(f && fprintf(f, "400") > 0 && fclose(f) == 0,
	      "oom_score_adj: %s", strerror(errno));
	f = fopen("/proc/self/loginuid", "w");
	have_loginuid = f && fprintf(f, "4242") > 0 && fclose(f) == 0;
	if (have_loginuid)
		have_loginuid = read_num("/proc/self/loginuid") == 4242;
	case_log("loginuid settable: %d, sessionid %ld", have_loginuid,
		 read_num("/proc/self/sessionid"));
	have_ag = getsid(0) == getpid() && autogroup_nice() != -100;
	if (have_ag) {
		f = fopen("/proc/self/autogroup", "w");
		CHECK(f && fprintf(f, "3") > 0 && fclose(f) == 0,
		      "autogroup: %s", strerror(errno));
		CHECK(autogroup_nice() == 3, "autogroup nice %d", autogroup_nice());
	}
	case_log("autogroup checked: %d", have_ag);
	set_self(0);
	for (i = 1; i < 5; i++)
		CHECK(pthread_create(&th[i], NULL, thread_main,
				     (void *)(intptr_t)i) == 0,
		      "pthread_create");
	pthread_barrier_wait(&bar);
	case_ready();

	case_wait_go();
	pthread_barrier_wait(&bar);
	check_self(0, "after restore");
	pthread_barrier_wait(&bar);
	CHECK(read_num("/proc/self/oom_score_adj") == 400,
	      "oom_score_adj %ld, want 400",
	      read_num("/proc/self/oom_score_adj"));
	if (have_loginuid)
		CHECK(read_num("/proc/self/loginuid") == 4242,
		      "loginuid %ld, want 4242", read_num("/proc/self/loginuid"));
	if (have_ag)
		CHECK(autogroup_nice() == 3, "autogroup nice %d, want 3",
		      autogroup_nice());
	case_log("sessionid after: %ld", read_num("/proc/self/sessionid"));
	case_pass();
}

/*
 * a_sched_deadline: a thread under SCHED_DEADLINE (runtime 1 ms every
 * 100 ms), mostly asleep. Its dump is refused naming the policy; the case
 * then checks that the thread still has its policy and the process runs.
 */
#include "case.h"

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
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
};

static volatile pid_t dl_tid;
static volatile int setup_err = -1;

static void *dl_main(void *arg)
{
	struct sattr a = { .size = sizeof(a), .policy = 6 /* SCHED_DEADLINE */,
			   .runtime = 1000000, .deadline = 100000000,
			   .period = 100000000 };

	(void)arg;
	setup_err = syscall(SYS_sched_setattr, 0, &a, 0) ? errno : 0;
	dl_tid = syscall(SYS_gettid);
	for (;;)
		case_sleep_ms(20);
	return NULL;
}

int main(int argc, char **argv)
{
	struct sattr a = { 0 };
	pthread_t th;

	case_init(argc, argv);
	CHECK(pthread_create(&th, NULL, dl_main, NULL) == 0, "pthread");
	while (!dl_tid)
		case_sleep_ms(1);
	CHECK(setup_err == 0, "sched_setattr(SCHED_DEADLINE): %s",
	      strerror(setup_err));
	case_ready();

	case_wait_go();
	CHECK(syscall(SYS_sched_getattr, dl_tid, &a, sizeof(a), 0) == 0 &&
		      a.policy == 6 && a.runtime == 1000000,
	      "deadline thread: policy %u runtime %llu", a.policy,
	      (unsigned long long)a.runtime);
	case_pass();
}

/*
 * a_sigtrap: SIGTRAP state survives C/R exactly (the engine's own
 * injected code traps with SIGTRAP, which must not touch the task's).
 *
 * MODE 0 (default): a SA_SIGINFO handler for SIGTRAP; SIGTRAP blocked in
 *   both threads; one queued process-wide (sigqueue, value 4242) and one
 *   queued to thread T (pthread_sigqueue, value 77).
 * MODE 1: the handler only, nothing pending.
 * MODE 2: SIGTRAP ignored.
 *
 * After the restores, from inside: the action (handler, flags) is the
 * same; in MODE 0 sigpending shows SIGTRAP in both threads, and unblocking
 * delivers exactly the two queued siginfos (code SI_QUEUE, our pid, the
 * values) to the handler, once each; in MODE 1 nothing is pending and a
 * raise(SIGTRAP) reaches the handler; in MODE 2 raise(SIGTRAP) is ignored.
 */
#include "case.h"

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>

#ifndef MODE
#define MODE 0
#endif

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

static volatile int got, got_code, got_val, got_pid;
static pthread_barrier_t bar;

static void on_trap(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	got++;
	got_code = si->si_code;
	got_val = si->si_value.sival_int;
	got_pid = si->si_pid;
}

static void check_action(const char *when)
{
	struct sigaction o;

	CHECK(sigaction(SIGTRAP, NULL, &o) == 0, "sigaction");
	if (MODE == 2)
		CHECK(o.sa_handler == SIG_IGN, "%s: SIGTRAP action %p, want SIG_IGN",
		      when, (void *)o.sa_handler);
	else
		CHECK(o.sa_sigaction == on_trap && (o.sa_flags & SA_SIGINFO),
		      "%s: SIGTRAP action %p flags %#x, want the handler",
		      when, (void *)o.sa_sigaction, o.sa_flags);
}

static int trap_pending(void)
{
	sigset_t p;

	sigpending(&p);
	return sigismember(&p, SIGTRAP);
}

/* expect_one unblocks SIGTRAP and requires exactly one delivery of
 * value val. */
static void expect_one(int val, const char *who)
{
	sigset_t m;

	got = 0;
	sigemptyset(&m);
	sigaddset(&m, SIGTRAP);
	pthread_sigmask(SIG_UNBLOCK, &m, NULL);
	CHECK(got == 1, "%s: %d deliveries of SIGTRAP, want 1", who, got);
	CHECK(got_code == SI_QUEUE && got_val == val && got_pid == getpid(),
	      "%s: siginfo code %d value %d pid %d, want SI_QUEUE %d %d", who,
	      got_code, got_val, got_pid, val, (int)getpid());
	pthread_sigmask(SIG_BLOCK, &m, NULL);
}

static void *thread_main(void *arg)
{
	(void)arg;
	pthread_barrier_wait(&bar); /* 1: T's signal queued */
	pthread_barrier_wait(&bar); /* 2: go */
	check_action("T after restore");
	if (MODE == 0) {
		CHECK(trap_pending(), "T: SIGTRAP not pending after restore");
		pthread_barrier_wait(&bar); /* 3: main took the shared one */
		expect_one(77, "T");
	} else {
		pthread_barrier_wait(&bar);
	}
	pthread_barrier_wait(&bar); /* 4 */
	return NULL;
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	sigset_t m;
	pthread_t th;
	union sigval v;

	case_init(argc, argv);
	pthread_barrier_init(&bar, NULL, 2);
	memset(&sa, 0, sizeof(sa));
	if (MODE == 2) {
		sa.sa_handler = SIG_IGN;
	} else {
		sa.sa_sigaction = on_trap;
		sa.sa_flags = SA_SIGINFO;
	}
	CHECK(sigaction(SIGTRAP, &sa, NULL) == 0, "sigaction");
	sigemptyset(&m);
	sigaddset(&m, SIGTRAP);
	if (MODE == 0)
		pthread_sigmask(SIG_BLOCK, &m, NULL); /* T inherits it */
	CHECK(pthread_create(&th, NULL, thread_main, NULL) == 0, "pthread");
	if (MODE == 0) {
		v.sival_int = 4242;
		CHECK(sigqueue(getpid(), SIGTRAP, v) == 0, "sigqueue: %s",
		      strerror(errno));
		v.sival_int = 77;
		CHECK(pthread_sigqueue(th, SIGTRAP, v) == 0, "pthread_sigqueue");
		CHECK(trap_pending(), "SIGTRAP not pending");
	}
	pthread_barrier_wait(&bar);
	check_action("before");
	case_ready();

	case_wait_go();
	pthread_barrier_wait(&bar);
	check_action("after restore");
	if (MODE == 0) {
		/* the shared one: only main unblocks it now */
		expect_one(4242, "main");
		pthread_barrier_wait(&bar);
	} else {
		CHECK(!trap_pending(), "SIGTRAP pending after restore");
		pthread_barrier_wait(&bar);
		got = 0;
		raise(SIGTRAP);
		CHECK(got == (MODE == 1), "raise(SIGTRAP): %d deliveries", got);
	}
	pthread_barrier_wait(&bar);
	pthread_join(th, NULL);
	case_pass();
}

/*
 * a_signals.c - signal dispositions, altstacks, masks and pending signals.
 *
 * State (before ready):
 *   - sigaction handlers with SA_SIGINFO|SA_ONSTACK|SA_RESTART and distinct
 *     sa_masks for SIGUSR1, SIGUSR2, SIGRTMIN+2; SIGWINCH with a plain
 *     handler and SA_RESETHAND|SA_NODEFER; SIGHUP ignored;
 *   - a sigaltstack in the main thread (flags 0) and one in thread T1
 *     (SS_AUTODISARM);
 *   - per-thread masks: both block USR1, USR2, RTMIN+2; main also blocks
 *     RTMIN+9, T1 also RTMIN+7;
 *   - pending: SIGUSR1 on the process (kill), SIGRTMIN+2 queued twice on the
 *     process with sigqueue values 111 then 222, SIGUSR2 on T1 only
 *     (pthread_kill).
 *
 * Checks (after go): sigaction() reports the same handler, flags, restorer
 * and mask for every signal; both altstacks are unchanged; each thread's
 * blocked mask is unchanged; /proc SigPnd/ShdPnd/SigBlk/SigIgn/SigCgt of
 * both threads are unchanged (so pending signals sit in the right queue).
 * Then main unblocks: SIGUSR1 runs once (SI_USER, our pid/uid) and
 * SIGRTMIN+2 twice with values 111 then 222 (SI_QUEUE), all in main, on
 * main's altstack, with the sa_mask in effect; T1 unblocks: SIGUSR2 runs
 * once in T1 (SI_TKILL) on T1's altstack (disarmed while in the handler, and
 * re-armed after). Finally SIGWINCH runs once and resets to SIG_DFL, SIGHUP
 * is still ignored, and nothing else is pending.
 */
#include "case.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>

#ifndef SS_AUTODISARM
#define SS_AUTODISARM (1U << 31) /* linux/signal.h */
#endif

#define ALTSZ (64 * 1024)
#define MAXREC 16

struct rec {
	int signo, code, value, pid, uid, tid;
	int on_alt;   /* address of a local is within the thread's altstack */
	int ss_flags; /* sigaltstack() flags seen inside the handler */
	int mask_ok;  /* sa_mask and the signal itself blocked in the handler */
};

static struct rec recs[MAXREC];
static int nrec;
static int winch_count;

static pid_t tid_main, tid_t1;
static char *alt_main, *alt_t1;
static volatile int t1_go, t1_done;
static char t1_err[256];

static int sig_rt2, sig_rt7, sig_rt9;

static pid_t gettid_(void)
{
	return (pid_t)syscall(SYS_gettid);
}

static void handler(int sig, siginfo_t *si, void *uc)
{
	struct rec *r;
	stack_t ss;
	sigset_t cur;
	struct sigaction sa;
	char local;
	char *alt;
	int i = __atomic_fetch_add(&nrec, 1, __ATOMIC_SEQ_CST);

	(void)uc;
	if (i >= MAXREC)
		return;
	r = &recs[i];
	r->signo = sig;
	r->code = si->si_code;
	r->value = si->si_value.sival_int;
	r->pid = si->si_pid;
	r->uid = (int)si->si_uid;
	r->tid = gettid_();
	alt = r->tid == tid_main ? alt_main : r->tid == tid_t1 ? alt_t1 : NULL;
	r->on_alt = alt && &local >= alt && &local < alt + ALTSZ;
	sigaltstack(NULL, &ss);
	r->ss_flags = ss.ss_flags;
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	sigaction(sig, NULL, &sa);
	r->mask_ok = sigismember(&cur, sig);
	for (i = 1; i < 65; i++)
		if (sigismember(&sa.sa_mask, i) && !sigismember(&cur, i))
			r->mask_ok = 0;
}

static void winch_handler(int sig)
{
	(void)sig;
	__atomic_add_fetch(&winch_count, 1, __ATOMIC_SEQ_CST);
}

/* Signals whose disposition is recorded and compared. */
static int watched[8];
static int nwatched;
static struct sigaction before[8];

static void install(int sig, int flags, const int *mask_sigs, int nmask)
{
	struct sigaction sa;
	int i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = handler;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < nmask; i++)
		sigaddset(&sa.sa_mask, mask_sigs[i]);
	if (sigaction(sig, &sa, NULL))
		case_fail("sigaction %d: %s", sig, strerror(errno));
}

static int same_set(const sigset_t *a, const sigset_t *b)
{
	int i;

	for (i = 1; i < 65; i++)
		if (sigismember(a, i) != sigismember(b, i))
			return 0;
	return 1;
}

static void check_dispositions(void)
{
	int i;

	for (i = 0; i < nwatched; i++) {
		struct sigaction now;

		if (sigaction(watched[i], NULL, &now))
			case_fail("sigaction(%d): %s", watched[i], strerror(errno));
		if (now.sa_sigaction != before[i].sa_sigaction)
			case_fail("signal %d: handler %p, was %p", watched[i],
				  (void *)now.sa_sigaction,
				  (void *)before[i].sa_sigaction);
		if (now.sa_flags != before[i].sa_flags)
			case_fail("signal %d: sa_flags %#x, was %#x", watched[i],
				  now.sa_flags, before[i].sa_flags);
		if (now.sa_restorer != before[i].sa_restorer)
			case_fail("signal %d: sa_restorer changed", watched[i]);
		if (!same_set(&now.sa_mask, &before[i].sa_mask))
			case_fail("signal %d: sa_mask changed", watched[i]);
	}
}

/* Reads the signal lines of /proc/self/task/TID/status into out. */
static void sig_status(pid_t tid, char *out, size_t size)
{
	char path[64], buf[4096], *line;
	size_t len = 0;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
	if (case_read_file(path, buf, sizeof(buf)) < 0)
		case_fail("read %s: %s", path, strerror(errno));
	out[0] = 0;
	for (line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		if (strncmp(line, "SigPnd:", 7) && strncmp(line, "ShdPnd:", 7) &&
		    strncmp(line, "SigBlk:", 7) && strncmp(line, "SigIgn:", 7) &&
		    strncmp(line, "SigCgt:", 7))
			continue;
		len += snprintf(out + len, size - len, "%s; ", line);
	}
}

static sigset_t mask_main, mask_t1;
static stack_t ss_main_before, ss_t1_before;
static char st_main_before[512], st_t1_before[512];

static void check_altstack(const char *who, const stack_t *want)
{
	stack_t now;

	if (sigaltstack(NULL, &now))
		case_fail("%s: sigaltstack: %s", who, strerror(errno));
	if (now.ss_sp != want->ss_sp || now.ss_size != want->ss_size ||
	    now.ss_flags != want->ss_flags)
		case_fail("%s: altstack %p/%zu/%#x, was %p/%zu/%#x", who, now.ss_sp,
			  now.ss_size, now.ss_flags, want->ss_sp, want->ss_size,
			  want->ss_flags);
}

static void *t1_main(void *arg)
{
	stack_t ss;
	sigset_t set, cur;
	const struct timespec ms = { 0, 1000000 };

	(void)arg;
	tid_t1 = gettid_();
	ss.ss_sp = alt_t1;
	ss.ss_size = ALTSZ;
	ss.ss_flags = SS_AUTODISARM;
	if (sigaltstack(&ss, NULL))
		case_fail("t1 sigaltstack: %s", strerror(errno));
	sigaltstack(NULL, &ss_t1_before);
	sigemptyset(&set);
	sigaddset(&set, sig_rt7);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_sigmask(SIG_BLOCK, NULL, &mask_t1);
	__atomic_store_n(&t1_done, 1, __ATOMIC_SEQ_CST); /* set up */

	while (!__atomic_load_n(&t1_go, __ATOMIC_SEQ_CST))
		nanosleep(&ms, NULL);

	/* After go: own altstack and mask unchanged, then take SIGUSR2. */
	sigaltstack(NULL, &ss);
	if (ss.ss_sp != ss_t1_before.ss_sp || ss.ss_size != ss_t1_before.ss_size ||
	    ss.ss_flags != ss_t1_before.ss_flags)
		snprintf(t1_err, sizeof(t1_err),
			 "t1 altstack %p/%zu/%#x, was %p/%zu/%#x", ss.ss_sp,
			 ss.ss_size, ss.ss_flags, ss_t1_before.ss_sp,
			 ss_t1_before.ss_size, ss_t1_before.ss_flags);
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	if (!t1_err[0] && !same_set(&cur, &mask_t1))
		snprintf(t1_err, sizeof(t1_err), "t1 blocked mask changed");
	if (!t1_err[0]) {
		sigemptyset(&set);
		sigaddset(&set, SIGUSR2);
		pthread_sigmask(SIG_UNBLOCK, &set, NULL); /* SIGUSR2 runs here */
		sigaltstack(NULL, &ss);
		if (ss.ss_sp != ss_t1_before.ss_sp ||
		    ss.ss_flags != ss_t1_before.ss_flags)
			snprintf(t1_err, sizeof(t1_err),
				 "t1 altstack not re-armed after the handler");
	}
	__atomic_store_n(&t1_done, 2, __ATOMIC_SEQ_CST);
	return NULL;
}

static void check_rec(int i, int signo, int code, int value, pid_t tid,
		      int ss_flags)
{
	struct rec *r = &recs[i];

	if (r->signo != signo)
		case_fail("record %d: signal %d, want %d", i, r->signo, signo);
	if (r->code != code)
		case_fail("signal %d: si_code %d, want %d", signo, r->code, code);
	if (code == SI_QUEUE && r->value != value)
		case_fail("signal %d: si_value %d, want %d", signo, r->value, value);
	if (r->pid != getpid() || r->uid != (int)getuid())
		case_fail("signal %d: si_pid/uid %d/%d, want %d/%d", signo, r->pid,
			  r->uid, getpid(), getuid());
	if (r->tid != tid)
		case_fail("signal %d handled by thread %d, want %d", signo, r->tid,
			  tid);
	if (!r->on_alt)
		case_fail("signal %d: handler not on the thread's altstack", signo);
	if (r->ss_flags != ss_flags)
		case_fail("signal %d: ss_flags %#x in handler, want %#x", signo,
			  r->ss_flags, ss_flags);
	if (!r->mask_ok)
		case_fail("signal %d: sa_mask not in effect in the handler", signo);
}

int main(int argc, char **argv)
{
	pthread_t t1;
	stack_t ss;
	sigset_t set, cur;
	struct sigaction sa;
	char st_now[512];
	int i, n_usr1 = 0, rt[2], nrt = 0, usr2_i = -1;

	case_init(argc, argv);
	sig_rt2 = SIGRTMIN + 2;
	sig_rt7 = SIGRTMIN + 7;
	sig_rt9 = SIGRTMIN + 9;
	tid_main = gettid_();
	alt_main = malloc(ALTSZ);
	alt_t1 = malloc(ALTSZ);
	if (!alt_main || !alt_t1)
		case_fail("malloc");

	{
		int m1[] = { SIGHUP, SIGWINCH };
		int m2[] = { SIGURG, SIGRTMIN + 5 };
		int m3[] = { SIGCHLD, SIGRTMIN + 6 };
		int fl = SA_SIGINFO | SA_ONSTACK | SA_RESTART;

		install(SIGUSR1, fl, m1, 2);
		install(SIGUSR2, fl, m2, 2);
		install(sig_rt2, fl, m3, 2);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = winch_handler;
	sa.sa_flags = SA_RESETHAND | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGTSTP);
	sigaction(SIGWINCH, &sa, NULL);
	signal(SIGHUP, SIG_IGN);
	watched[nwatched++] = SIGUSR1;
	watched[nwatched++] = SIGUSR2;
	watched[nwatched++] = sig_rt2;
	watched[nwatched++] = SIGWINCH;
	watched[nwatched++] = SIGHUP;
	watched[nwatched++] = SIGPIPE; /* default */
	for (i = 0; i < nwatched; i++)
		sigaction(watched[i], NULL, &before[i]);

	ss.ss_sp = alt_main;
	ss.ss_size = ALTSZ;
	ss.ss_flags = 0;
	if (sigaltstack(&ss, NULL))
		case_fail("sigaltstack: %s", strerror(errno));
	sigaltstack(NULL, &ss_main_before);

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, sig_rt2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (pthread_create(&t1, NULL, t1_main, NULL))
		case_fail("pthread_create");
	sigemptyset(&set);
	sigaddset(&set, sig_rt9);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_sigmask(SIG_BLOCK, NULL, &mask_main);
	while (!__atomic_load_n(&t1_done, __ATOMIC_SEQ_CST))
		case_sleep_ms(1);
	__atomic_store_n(&t1_done, 0, __ATOMIC_SEQ_CST);

	/* Queue the pending signals. */
	if (kill(getpid(), SIGUSR1))
		case_fail("kill: %s", strerror(errno));
	if (sigqueue(getpid(), sig_rt2, (union sigval){ .sival_int = 111 }) ||
	    sigqueue(getpid(), sig_rt2, (union sigval){ .sival_int = 222 }))
		case_fail("sigqueue: %s", strerror(errno));
	if ((errno = pthread_kill(t1, SIGUSR2)))
		case_fail("pthread_kill: %s", strerror(errno));

	sigpending(&set);
	if (!sigismember(&set, SIGUSR1) || !sigismember(&set, sig_rt2) ||
	    sigismember(&set, SIGUSR2))
		case_fail("unexpected pending set in main before ready");
	sig_status(tid_main, st_main_before, sizeof(st_main_before));
	sig_status(tid_t1, st_t1_before, sizeof(st_t1_before));
	case_log("main: %s", st_main_before);
	case_log("t1:   %s", st_t1_before);
	case_ready();
	case_wait_go();

	/* State as recorded? */
	check_dispositions();
	check_altstack("main", &ss_main_before);
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	if (!same_set(&cur, &mask_main))
		case_fail("main blocked mask changed");
	sig_status(tid_main, st_now, sizeof(st_now));
	if (strcmp(st_now, st_main_before))
		case_fail("main status: %s, was %s", st_now, st_main_before);
	sig_status(tid_t1, st_now, sizeof(st_now));
	if (strcmp(st_now, st_t1_before))
		case_fail("t1 status: %s, was %s", st_now, st_t1_before);
	if (nrec != 0)
		case_fail("%d handlers ran before unblocking", nrec);

	/* Deliver the process-wide pending signals to main. */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, sig_rt2);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	if (nrec != 3)
		case_fail("%d handlers ran in main after unblocking, want 3", nrec);

	/* Let T1 take its own SIGUSR2. */
	__atomic_store_n(&t1_go, 1, __ATOMIC_SEQ_CST);
	pthread_join(t1, NULL);
	if (t1_err[0])
		case_fail("%s", t1_err);
	if (nrec != 4)
		case_fail("%d handlers ran in total, want 4", nrec);

	/* Nested delivery may run USR1 before or after the RT signals; the RT
	 * ones must come in queue order. */
	for (i = 0; i < 4; i++) {
		if (recs[i].signo == SIGUSR1) {
			n_usr1++;
			check_rec(i, SIGUSR1, SI_USER, 0, tid_main, SS_ONSTACK);
		} else if (recs[i].signo == sig_rt2 && nrt < 2) {
			check_rec(i, sig_rt2, SI_QUEUE, nrt == 0 ? 111 : 222,
				  tid_main, SS_ONSTACK);
			rt[nrt++] = recs[i].value;
		} else if (recs[i].signo == SIGUSR2) {
			usr2_i = i;
			check_rec(i, SIGUSR2, SI_TKILL, 0, tid_t1, SS_DISABLE);
		} else {
			case_fail("unexpected record %d: signal %d value %d", i,
				  recs[i].signo, recs[i].value);
		}
	}
	if (n_usr1 != 1 || nrt != 2 || usr2_i < 0)
		case_fail("deliveries: USR1 %d, RT+2 %d, USR2 %s", n_usr1, nrt,
			  usr2_i < 0 ? "none" : "1");
	case_log("RT+2 values in order: %d %d", rt[0], rt[1]);

	/* Behaviour of the other dispositions. */
	raise(SIGWINCH);
	if (winch_count != 1)
		case_fail("SIGWINCH handler ran %d times", winch_count);
	sigaction(SIGWINCH, NULL, &sa);
	if (sa.sa_handler != SIG_DFL)
		case_fail("SA_RESETHAND did not reset SIGWINCH");
	raise(SIGHUP); /* ignored: we survive */
	sigpending(&set);
	for (i = 1; i < 65; i++)
		if (sigismember(&set, i))
			case_fail("signal %d still pending", i);
	check_altstack("main (end)", &ss_main_before);
	case_pass();
}

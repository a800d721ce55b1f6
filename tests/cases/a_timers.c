/*
 * a_timers.c - interval timers and POSIX timers survive dump/restore.
 *
 * State (before ready):
 *   - setitimer ITIMER_REAL 50 ms, ITIMER_VIRTUAL 30 ms, ITIMER_PROF 40 ms
 *     (the CPU timers are driven by a spinning thread);
 *   - POSIX timer A: CLOCK_MONOTONIC, SIGEV_SIGNAL SIGRTMIN+1, value 0x1111,
 *     20 ms / 20 ms;
 *   - POSIX timer B: CLOCK_BOOTTIME, SIGEV_THREAD_ID to thread "target",
 *     SIGRTMIN+3, value 0x2222, 30 ms / 30 ms;
 *   - every timer has fired at least once.
 * Signals: main takes ALRM/VTALRM/PROF/RT+1 (the spinner blocks them all),
 * the target thread takes RT+3 only.
 *
 * Checks (after go): getitimer intervals unchanged and armed; timer_gettime
 * and timer_getoverrun work on the same timer_t values with the same
 * intervals; /proc/self/timers (ids, signals, notify targets, clocks)
 * unchanged; every handler saw the right si_code/si_value/thread; over a
 * window of >= 500 ms each timer fires at 40-160 % of its expected rate
 * (wall time for REAL/A/B, process CPU time for VIRTUAL/PROF; the lower
 * bound discounts time the main thread was starved, as ALRM/VTALRM/PROF
 * coalesce); the expiries of REAL/A/B at both ends of the window lie on the
 * grid of their period (robust to scheduling delays on a loaded machine).
 */
#include "case.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

#define MS 1000000LL

enum { C_REAL, C_VIRT, C_PROF, C_A, C_B, NC };
static const char *const cname[NC] = { "ITIMER_REAL", "ITIMER_VIRTUAL",
				       "ITIMER_PROF", "timer A", "timer B" };
static const long long interval_ms[NC] = { 50, 30, 40, 20, 30 };

static long counts[NC];
static volatile int bad; /* first handler error, as a code */
static volatile int stop;
static pid_t target_tid;
static int sig_a, sig_b;

static void set_bad(int code)
{
	int zero = 0;

	__atomic_compare_exchange_n(&bad, &zero, code, 0, __ATOMIC_SEQ_CST,
				    __ATOMIC_SEQ_CST);
}

static void handler(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (sig == SIGALRM)
		__atomic_add_fetch(&counts[C_REAL], 1, __ATOMIC_SEQ_CST);
	else if (sig == SIGVTALRM)
		__atomic_add_fetch(&counts[C_VIRT], 1, __ATOMIC_SEQ_CST);
	else if (sig == SIGPROF)
		__atomic_add_fetch(&counts[C_PROF], 1, __ATOMIC_SEQ_CST);
	else if (sig == sig_a) {
		if (si->si_code != SI_TIMER || si->si_value.sival_int != 0x1111)
			set_bad(1);
		__atomic_add_fetch(&counts[C_A], 1 + si->si_overrun,
				   __ATOMIC_SEQ_CST);
	} else if (sig == sig_b) {
		if (si->si_code != SI_TIMER || si->si_value.sival_int != 0x2222)
			set_bad(2);
		if ((pid_t)syscall(SYS_gettid) != target_tid)
			set_bad(3);
		__atomic_add_fetch(&counts[C_B], 1 + si->si_overrun,
				   __ATOMIC_SEQ_CST);
	}
}

static void block_all_but(int keep)
{
	sigset_t set;

	sigfillset(&set);
	if (keep)
		sigdelset(&set, keep);
	pthread_sigmask(SIG_SETMASK, &set, NULL);
}

static void *spinner(void *arg)
{
	volatile unsigned long n = 0;

	(void)arg;
	block_all_but(0);
	while (!stop)
		n++;
	return NULL;
}

static volatile int target_up;

static void *target(void *arg)
{
	(void)arg;
	block_all_but(sig_b);
	target_tid = (pid_t)syscall(SYS_gettid);
	__atomic_store_n(&target_up, 1, __ATOMIC_SEQ_CST);
	while (!stop)
		case_sleep_ms(50);
	return NULL;
}

static long long tv_ns(struct timeval tv)
{
	return tv.tv_sec * 1000000000LL + tv.tv_usec * 1000LL;
}

static long long ts_ns(struct timespec ts)
{
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* read_timers returns /proc/self/timers with its per-timer blocks sorted
 * (the kernel's listing order is not part of the state). */
static void read_timers(char *out, size_t size)
{
	char buf[4096], *blk[16], *p;
	size_t len = 0;
	int n = 0, i;

	if (case_read_file("/proc/self/timers", buf, sizeof(buf)) < 0)
		case_fail("read /proc/self/timers: %s", strerror(errno));
	/* Blocks start with "ID: " at the beginning of a line. */
	if (!strncmp(buf, "ID: ", 4))
		blk[n++] = buf;
	for (p = buf; (p = strstr(p, "\nID: ")) && n < 16; p++) {
		*p = 0; /* terminate the previous block */
		blk[n++] = p + 1;
	}
	qsort(blk, n, sizeof(blk[0]), cmp_str);
	out[0] = 0;
	for (i = 0; i < n; i++)
		len += snprintf(out + len, size - len, "%s%s", blk[i],
				blk[i][strlen(blk[i]) - 1] == '\n' ? "" : "\n");
}

static void check_itimer(int which, const char *name, long long ms)
{
	struct itimerval it;

	if (getitimer(which, &it))
		case_fail("getitimer %s: %s", name, strerror(errno));
	if (tv_ns(it.it_interval) != ms * MS)
		case_fail("%s interval %lld ns, want %lld ms", name,
			  tv_ns(it.it_interval), ms);
	if (tv_ns(it.it_value) <= 0 || tv_ns(it.it_value) > ms * MS + MS)
		case_fail("%s value %lld ns (interval %lld ms)", name,
			  tv_ns(it.it_value), ms);
}

static void check_ptimer(timer_t id, const char *name, long long ms)
{
	struct itimerspec its;
	int tries = 0;

	/* An expired timer whose signal is still queued may read as 0 until
	 * the signal is delivered and the timer re-armed. */
	do {
		if (tries)
			case_sleep_ms(1);
		if (timer_gettime(id, &its))
			case_fail("timer_gettime %s (id %p): %s", name, id,
				  strerror(errno));
	} while (ts_ns(its.it_value) == 0 && ++tries < 50);
	if (ts_ns(its.it_interval) != ms * MS)
		case_fail("%s interval %lld ns, want %lld ms", name,
			  ts_ns(its.it_interval), ms);
	if (ts_ns(its.it_value) <= 0 || ts_ns(its.it_value) > ms * MS)
		case_fail("%s value %lld ns (interval %lld ms)", name,
			  ts_ns(its.it_value), ms);
	if (timer_getoverrun(id) < 0)
		case_fail("timer_getoverrun %s: %s", name, strerror(errno));
}

/* Starvation of the main thread during the window: signals that are not
 * queued (ALRM/VTALRM/PROF) coalesce while the process does not run. */
static long long late_ns;

/* check_rate: counts[c] over the window against base_ns (wall or CPU time)
 * of expected time, within 40-160 %; the lower bound discounts the time the
 * main thread was kept off the CPU, the upper one allows expirations that
 * were overdue when the window started. */
static void check_rate(int c, long long base_ns, long long wall_ns)
{
	long long iv = interval_ms[c] * MS;
	double expected = (double)base_ns / (double)iv;
	double frac = wall_ns > late_ns ? (double)(wall_ns - late_ns) / wall_ns : 0;
	double lo = 0.4 * expected * frac;
	double hi = 1.6 * expected + 2 + (double)late_ns / (double)iv;
	long n = __atomic_load_n(&counts[c], __ATOMIC_SEQ_CST);

	case_log("%s: %ld signals, expected %.1f (accepting %.1f-%.1f)",
		 cname[c], n, expected, lo, hi);
	if (n < lo || n > hi || (n == 0 && expected >= 3))
		case_fail("%s fired %ld times, expected about %.1f", cname[c], n,
			  expected);
}

/* Absolute expiry time of a wall-clock timer: now + remaining, sampled with
 * a tight bracket. which >= 0: an itimer; else the POSIX timer id. */
static long long expiry(int which, timer_t id, clockid_t clk)
{
	int tries;

	for (tries = 0; tries < 1000; tries++) {
		struct timespec a, b;
		long long rem;

		clock_gettime(clk, &a);
		if (which >= 0) {
			struct itimerval it;

			getitimer(which, &it);
			rem = tv_ns(it.it_value);
		} else {
			struct itimerspec its;

			timer_gettime(id, &its);
			rem = ts_ns(its.it_value);
		}
		clock_gettime(clk, &b);
		/* An expired timer whose signal is not delivered yet is not
		 * re-armed (it reads as ~0): sample again after delivery. */
		if (rem <= 1000) {
			case_sleep_ms(1);
			continue;
		}
		if (ts_ns(b) - ts_ns(a) < 200000)
			return (ts_ns(a) + ts_ns(b)) / 2 + rem;
	}
	case_fail("cannot sample a timer within 200 us");
}

/* The expiries at both ends of the window must lie on one grid of the
 * timer's period, as many periods apart as the window is long. */
static void check_grid(int c, long long e0, long long e1, long long wall)
{
	long long iv = interval_ms[c] * MS;
	long long d = e1 - e0, n = (d + iv / 2) / iv, off = d - n * iv;
	long long want = wall / iv;

	if (off < -MS || off > MS)
		case_fail("%s: expiries %lld ns apart, not a multiple of %lld ms",
			  cname[c], d, interval_ms[c]);
	if (n < want - 2 || n > want + 2)
		case_fail("%s: %lld periods elapsed in %lld ms, want about %lld",
			  cname[c], n, wall / MS, want);
}

static long long ru_ns(int user_only)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return tv_ns(ru.ru_utime) + (user_only ? 0 : tv_ns(ru.ru_stime));
}

int main(int argc, char **argv)
{
	pthread_t th_spin, th_target;
	struct sigaction sa;
	struct sigevent sev;
	struct itimerspec its;
	struct itimerval itv;
	timer_t ta, tb, ta0, tb0;
	char timers0[2048], timers1[2048];
	long long t0, wall, wall2, u0, p0, ucpu, pcpu, deadline;
	long long er0, er1, ea0, ea1, eb0, eb1;
	int i;

	case_init(argc, argv);
	sig_a = SIGRTMIN + 1;
	sig_b = SIGRTMIN + 3;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = handler;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	sigaction(SIGVTALRM, &sa, NULL);
	sigaction(SIGPROF, &sa, NULL);
	sigaction(sig_a, &sa, NULL);
	sigaction(sig_b, &sa, NULL);

	if (pthread_create(&th_target, NULL, target, NULL) ||
	    pthread_create(&th_spin, NULL, spinner, NULL))
		case_fail("pthread_create");
	while (!__atomic_load_n(&target_up, __ATOMIC_SEQ_CST))
		case_sleep_ms(1);

	/* Interval timers. */
	itv.it_interval = itv.it_value = (struct timeval){ 0, 50000 };
	if (setitimer(ITIMER_REAL, &itv, NULL))
		case_fail("setitimer REAL: %s", strerror(errno));
	itv.it_interval = itv.it_value = (struct timeval){ 0, 30000 };
	if (setitimer(ITIMER_VIRTUAL, &itv, NULL))
		case_fail("setitimer VIRTUAL: %s", strerror(errno));
	itv.it_interval = itv.it_value = (struct timeval){ 0, 40000 };
	if (setitimer(ITIMER_PROF, &itv, NULL))
		case_fail("setitimer PROF: %s", strerror(errno));

	/* POSIX timers. */
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = sig_a;
	sev.sigev_value.sival_int = 0x1111;
	if (timer_create(CLOCK_MONOTONIC, &sev, &ta))
		case_fail("timer_create A: %s", strerror(errno));
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = sig_b;
	sev.sigev_value.sival_int = 0x2222;
	sev.sigev_notify_thread_id = target_tid;
	if (timer_create(CLOCK_BOOTTIME, &sev, &tb))
		case_fail("timer_create B: %s", strerror(errno));
	its.it_interval = its.it_value = (struct timespec){ 0, 20 * MS };
	if (timer_settime(ta, 0, &its, NULL))
		case_fail("timer_settime A: %s", strerror(errno));
	its.it_interval = its.it_value = (struct timespec){ 0, 30 * MS };
	if (timer_settime(tb, 0, &its, NULL))
		case_fail("timer_settime B: %s", strerror(errno));
	ta0 = ta;
	tb0 = tb;

	/* Every timer must have fired before we call it ready. */
	deadline = case_now() + 10000 * MS;
	for (;;) {
		int ok = 1;

		for (i = 0; i < NC; i++)
			ok &= __atomic_load_n(&counts[i], __ATOMIC_SEQ_CST) > 0;
		if (ok)
			break;
		if (case_now() > deadline)
			case_fail("not every timer fired before ready");
		case_sleep_ms(10);
	}
	if (bad)
		case_fail("handler error %d before ready", bad);
	read_timers(timers0, sizeof(timers0));
	case_log("timer ids A=%p B=%p", ta, tb);
	case_ready();
	case_wait_go();

	/* Same timers, same settings. */
	if (ta != ta0 || tb != tb0)
		case_fail("timer_t variables changed");
	check_itimer(ITIMER_REAL, "ITIMER_REAL", 50);
	check_itimer(ITIMER_VIRTUAL, "ITIMER_VIRTUAL", 30);
	check_itimer(ITIMER_PROF, "ITIMER_PROF", 40);
	check_ptimer(ta, "timer A", 20);
	check_ptimer(tb, "timer B", 30);
	read_timers(timers1, sizeof(timers1));
	if (strcmp(timers0, timers1))
		case_fail("/proc/self/timers changed:\n%s\nwas:\n%s", timers1,
			  timers0);
	if (bad)
		case_fail("handler error %d", bad);

	/* Rates over a fresh window of >= 500 ms (longer until the process
	 * used >= 300 ms of CPU, for the CPU timers, at most 5 s). */
	er0 = expiry(ITIMER_REAL, NULL, CLOCK_MONOTONIC);
	ea0 = expiry(-1, ta, CLOCK_MONOTONIC);
	eb0 = expiry(-1, tb, CLOCK_BOOTTIME);
	for (i = 0; i < NC; i++)
		__atomic_store_n(&counts[i], 0, __ATOMIC_SEQ_CST);
	t0 = case_now();
	u0 = ru_ns(1);
	p0 = ru_ns(0);
	do {
		long long a = case_now(), d;

		case_sleep_ms(10);
		d = case_now() - a;
		if (d > 11 * MS)
			late_ns += d - 10 * MS;
	} while (case_now() - t0 < 500 * MS ||
		 (ru_ns(1) - u0 < 300 * MS && case_now() - t0 < 5000 * MS));
	wall = case_now() - t0;
	ucpu = ru_ns(1) - u0;
	pcpu = ru_ns(0) - p0;
	er1 = expiry(ITIMER_REAL, NULL, CLOCK_MONOTONIC);
	ea1 = expiry(-1, ta, CLOCK_MONOTONIC);
	eb1 = expiry(-1, tb, CLOCK_BOOTTIME);
	wall2 = case_now() - t0;
	case_log("window: wall %lld ms (main late %lld ms), user %lld ms, "
		 "user+sys %lld ms",
		 wall / MS, late_ns / MS, ucpu / MS, pcpu / MS);
	check_grid(C_REAL, er0, er1, wall2);
	check_grid(C_A, ea0, ea1, wall2);
	check_grid(C_B, eb0, eb1, wall2);
	check_rate(C_REAL, wall, wall);
	check_rate(C_A, wall, wall);
	check_rate(C_B, wall, wall);
	if (ucpu < 100 * MS)
		case_fail("the spinner got only %lld ms of CPU in %lld ms",
			  ucpu / MS, wall / MS);
	check_rate(C_VIRT, ucpu, wall);
	check_rate(C_PROF, pcpu, wall);
	if (bad)
		case_fail("handler error %d", bad);

	stop = 1;
	pthread_join(th_spin, NULL);
	pthread_join(th_target, NULL);
	case_pass();
}

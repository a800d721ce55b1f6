/*
 * t_stopsig: children stopped by SIGTSTP, SIGTTIN and SIGTTOU come back
 * stopped by the same signal.
 *
 *   R   case root; collects S2's stop report before the dump (waitpid
 *       WUNTRACED), not S1's nor S3's
 *   |-- S1  own process group, two threads; its main thread blocks
 *   |       SIGTSTP, the other does not; stopped by SIGTSTP
 *   |-- S2  own process group, stopped by SIGTTIN
 *   `-- S3  own process group, stopped by SIGTTOU
 *
 * After go, R checks for each S: state T, nothing pending in S (a stop
 * signal put back into a queue would stop S again after SIGCONT);
 * waitid(WSTOPPED|WNOHANG|WNOWAIT) reports CLD_STOPPED with the same signal
 * for S1 and S3 and nothing for S2 (collected already); R's SIGCHLD handler
 * got no report at all across the restores (no child stopped or continued
 * in between); then SIGCONT, and every S exits 0 when told.
 */
#include "t_tree.h"

#include <pthread.h>
#include <sys/mman.h>

struct shared {
	volatile int quit;
};

static struct shared *sh;
static volatile int continued; /* CLD_CONTINUED reports R's handler got */
static volatile int stopped;   /* CLD_STOPPED reports */

static void on_chld(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	if (si->si_code == CLD_CONTINUED)
		continued++;
	if (si->si_code == CLD_STOPPED)
		stopped++;
}

static void *s1_thread(void *arg)
{
	(void)arg;
	while (!sh->quit)
		case_sleep_ms(2);
	return NULL;
}

static pid_t child(int threads)
{
	pid_t p = tt_fork();
	pthread_t th;

	if (p)
		return p;
	setpgid(0, 0);
	if (threads) {
		sigset_t m;

		sigemptyset(&m);
		sigaddset(&m, SIGTSTP);
		pthread_sigmask(SIG_BLOCK, &m, NULL);
		/* the new thread starts with SIGTSTP unblocked */
		sigprocmask(SIG_UNBLOCK, &m, NULL);
		CHECK(pthread_create(&th, NULL, s1_thread, NULL) == 0,
		      "pthread_create");
		pthread_sigmask(SIG_BLOCK, &m, NULL);
	}
	while (!sh->quit)
		case_sleep_ms(2);
	_exit(0);
}

/* pending reads SigPnd|ShdPnd of every thread of pid. */
static unsigned long long pending(pid_t pid)
{
	char path[64], buf[4096], *p;
	unsigned long long v = 0;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	CHECK(case_read_file(path, buf, sizeof(buf)) > 0, "%s", path);
	p = strstr(buf, "\nShdPnd:");
	if (p)
		v |= strtoull(p + 8, NULL, 16);
	p = strstr(buf, "\nSigPnd:");
	if (p)
		v |= strtoull(p + 8, NULL, 16);
	return v;
}

/* report returns the stop signal of s's pending stop report (WNOWAIT: the
 * report stays), or 0 when there is none. */
static int report(pid_t s, const char *when)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	CHECK(waitid(P_PID, s, &si, WSTOPPED | WNOHANG | WNOWAIT) == 0,
	      "%s: waitid %d: %s", when, (int)s, strerror(errno));
	if (si.si_pid != s)
		return 0;
	CHECK(si.si_code == CLD_STOPPED, "%s: pid %d: waitid code %d", when,
	      (int)s, si.si_code);
	return si.si_status;
}

static void check_stopped(pid_t s, int sig, int reported, const char *when)
{
	long long end = case_now() + 2000000000LL;
	int got;

	tt_wait_state(s, 'T', when);
	while (reported && !report(s, when)) {
		CHECK(case_now() < end, "%s: no stop report for %d", when,
		      (int)s);
		case_sleep_ms(2);
	}
	got = report(s, when);
	if (reported)
		CHECK(got == sig, "%s: pid %d: reported stopped by %d, want %d (%s)",
		      when, (int)s, got, sig, strsignal(sig));
	else
		CHECK(got == 0, "%s: pid %d: a stop report (signal %d) though R collected it before the dump",
		      when, (int)s, got);
	CHECK(pending(s) == 0, "%s: pid %d has pending signals %#llx", when,
	      (int)s, pending(s));
}

int main(int argc, char **argv)
{
	static const int sigs[3] = { SIGTSTP, SIGTTIN, SIGTTOU };
	pid_t s[3], pids[4];
	int i, stopped0;

	case_init(argc, argv);
	{
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = on_chld;
		sa.sa_flags = SA_SIGINFO | SA_RESTART;
		CHECK(sigaction(SIGCHLD, &sa, NULL) == 0, "sigaction");
	}
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		  -1, 0);
	CHECK(sh != MAP_FAILED, "mmap");
	for (i = 0; i < 3; i++) {
		s[i] = child(i == 0);
		setpgid(s[i], s[i]);
	}
	case_sleep_ms(50); /* S1's thread exists */
	for (i = 0; i < 3; i++) {
		CHECK(kill(s[i], sigs[i]) == 0, "kill: %s", strerror(errno));
		check_stopped(s[i], sigs[i], 1, "before ready");
	}
	{
		int st;

		CHECK(waitpid(s[1], &st, WUNTRACED) == s[1] && WIFSTOPPED(st) &&
			      WSTOPSIG(st) == SIGTTIN,
		      "waitpid S2: %#x", st);
		check_stopped(s[1], sigs[1], 0, "S2 collected");
	}
	while (stopped < 3)
		case_sleep_ms(2);
	case_sleep_ms(20);
	stopped0 = stopped;
	pids[0] = getpid();
	for (i = 0; i < 3; i++)
		pids[i + 1] = s[i];
	tt_write_tree(pids, 4);

	CHECK(continued == 0, "CLD_CONTINUED before ready: %d", continued);
	case_ready();

	case_wait_go();
	for (i = 0; i < 3; i++)
		check_stopped(s[i], sigs[i], i != 1, "after restore");
	CHECK(stopped == stopped0,
	      "R got %d CLD_STOPPED report(s) across the restores",
	      stopped - stopped0);
	CHECK(continued == 0,
	      "R got %d CLD_CONTINUED report(s) though no child was continued",
	      continued);
	sh->quit = 1;
	for (i = 0; i < 3; i++)
		CHECK(kill(s[i], SIGCONT) == 0, "SIGCONT: %s", strerror(errno));
	for (i = 0; i < 3; i++) {
		int st;
		long long end = case_now() + TT_TIMEOUT_MS * 1000000LL;

		for (;;) {
			pid_t r = waitpid(s[i], &st, WNOHANG);

			CHECK(r >= 0, "waitpid: %s", strerror(errno));
			if (r == s[i] && WIFEXITED(st))
				break;
			CHECK(!(r == s[i] && WIFSIGNALED(st)),
			      "pid %d killed by %d", (int)s[i], WTERMSIG(st));
			CHECK(case_now() < end, "pid %d did not end (state %c)",
			      (int)s[i], 0);
			case_sleep_ms(2);
		}
		CHECK(WEXITSTATUS(st) == 0, "pid %d exit %d", (int)s[i],
		      WEXITSTATUS(st));
	}
	tt_no_children();
	case_pass();
}

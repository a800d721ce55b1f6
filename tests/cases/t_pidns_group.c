/*
 * t_pidns_group: the init of a pid namespace whose tree holds a process
 * group and a session whose leaders are gone, dumped as its own tree.
 *
 *   C   case root, not dumped: unshare(CLONE_NEWPID), forks N, writes N's
 *   |   pid to WORKDIR/dumpme
 *   `-- N   pid 1; setsid(); forks
 *         G   pid 2: setpgid(0, 0), forks M (pid 3, in group 2), exits;
 *             N reaps it: group 2 has no leader
 *         S   pid 4: setsid(), forks T (pid 5, session and group 4),
 *             exits; N reaps it: session 4 has no leader
 *       M and T are children of N (reparented: N is the namespace's init).
 *
 * After go N checks from inside: M (pid 3) is in group 2 of session 1,
 * T (pid 5) in group 4 of session 4 (getpgid/getsid), and a new process
 * joins group 2 (setpgid to 2 works, so the group exists). Then it kills
 * M and T, reaps them and writes WORKDIR/ns.result.
 */
#include "t_pidns.h"

static void sleep_forever(void)
{
	for (;;)
		pause();
}

static __attribute__((noreturn)) void ns_init(void)
{
	pid_t g, s, k;
	int st;

	NCHECK(getpid() == 1, "ns init: pid %d, want 1", (int)getpid());
	NCHECK(setsid() == 1, "ns init: setsid: %s", strerror(errno));
	g = tt_fork();
	if (g == 0) {
		setpgid(0, 0);
		if (tt_fork() == 0)
			sleep_forever();
		_exit(0);
	}
	NCHECK(g == 2, "G is pid %d", (int)g);
	tt_expect_exit(g, 0, "G");
	s = tt_fork();
	if (s == 0) {
		setsid();
		if (tt_fork() == 0)
			sleep_forever();
		_exit(0);
	}
	NCHECK(s == 4, "S is pid %d", (int)s);
	tt_expect_exit(s, 0, "S");
	NCHECK(getpgid(3) == 2 && getsid(3) == 1, "M: pgid %d sid %d",
	       (int)getpgid(3), (int)getsid(3));
	NCHECK(getpgid(5) == 4 && getsid(5) == 4, "T: pgid %d sid %d",
	       (int)getpgid(5), (int)getsid(5));
	write_file("ns.ready", "ready\n");

	case_wait_go();
	NCHECK(getpid() == 1, "ns init after restore: pid %d", (int)getpid());
	NCHECK(getpgid(3) == 2 && getsid(3) == 1,
	       "M after restore: pgid %d sid %d, want 2 1", (int)getpgid(3),
	       (int)getsid(3));
	NCHECK(getpgid(5) == 4 && getsid(5) == 4,
	       "T after restore: pgid %d sid %d, want 4 4", (int)getpgid(5),
	       (int)getsid(5));
	k = tt_fork();
	if (k == 0)
		_exit(setpgid(0, 2) == 0 ? 0 : 1);
	st = tt_wait(k, "joiner");
	NCHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	       "a new process cannot join group 2 (status %#x)", st);
	kill(3, SIGKILL);
	kill(5, SIGKILL);
	tt_wait(3, "M");
	tt_wait(5, "T");
	write_file("ns.result", "PASS\n");
	_exit(0);
}

int main(int argc, char **argv)
{
	return pidns_main(argc, argv, ns_init);
}

/*
 * t_zombies: zombies stay zombies, reapable by their parent with the same
 * status.
 *
 *   R   case root
 *   |-- Z1  setpgid(0,0) (a zombie leading its own group), exit(3)
 *   |-- Z2  exit(0)
 *   |-- Z3  killed by its own SIGTERM
 *   `-- L   alive; its child G exits 42 and is left unreaped by L
 *
 * Before ready R waits until Z1..Z3 are zombies (/proc state Z) and reads
 * their statuses with waitid(WNOWAIT), which leaves them zombies; L does the
 * same for G. The Go test sees the zombies in the tree (state Z, same exit
 * code field in /proc/PID/stat) after each restore.
 *
 * After go: waitpid(Zi, WNOHANG) must return Zi at once (already a zombie)
 * with the recorded status; L reaps G the same way (exit 42) and exits 0,
 * R reaps L and must have no child left.
 */
#include "t_tree.h"

#define NZ 3

/* want_status is what wait(2) must say for zombie i. */
static int status_ok(int i, int st)
{
	switch (i) {
	case 0:
		return WIFEXITED(st) && WEXITSTATUS(st) == 3;
	case 1:
		return WIFEXITED(st) && WEXITSTATUS(st) == 0;
	default:
		return WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM;
	}
}

/* check_nowait reads the status of the zombie pid without reaping it. */
static void check_nowait(pid_t pid, int code, int status, const char *what)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	CHECK(waitid(P_PID, pid, &si, WEXITED | WNOWAIT | WNOHANG) == 0 &&
		      si.si_pid == pid,
	      "%s (pid %d): waitid(WNOWAIT) found no zombie: %s", what,
	      (int)pid, strerror(errno));
	CHECK(si.si_code == code && si.si_status == status,
	      "%s (pid %d): waitid code %d status %d, want %d %d", what,
	      (int)pid, si.si_code, si.si_status, code, status);
}

/* reap_zombie requires waitpid(pid, WNOHANG) to reap pid immediately and
 * returns its status. */
static int reap_zombie(pid_t pid, const char *what)
{
	int st = 0;
	pid_t r = waitpid(pid, &st, WNOHANG);

	CHECK(r == pid, "%s (pid %d) is not a reapable zombie: waitpid = %d (%s)",
	      what, (int)pid, (int)r, r < 0 ? strerror(errno) : "not exited");
	return st;
}

int main(int argc, char **argv)
{
	static const int codes[NZ] = { CLD_EXITED, CLD_EXITED, CLD_KILLED };
	static const int stats[NZ] = { 3, 0, SIGTERM };
	pid_t root, z[NZ], l, g, pids[2 + NZ + 1];
	int rep[2], i;

	case_init(argc, argv);
	root = getpid();

	for (i = 0; i < NZ; i++) {
		z[i] = tt_fork();
		if (z[i] == 0) {
			switch (i) {
			case 0:
				setpgid(0, 0);
				_exit(3);
			case 1:
				_exit(0);
			default:
				signal(SIGTERM, SIG_DFL);
				kill(getpid(), SIGTERM);
				for (;;)
					pause();
			}
		}
	}

	tt_pipe(rep);
	l = tt_fork();
	if (l == 0) {
		int st;

		close(rep[0]);
		g = tt_fork();
		if (g == 0)
			_exit(42);
		tt_wait_state(g, 'Z', "G");
		check_nowait(g, CLD_EXITED, 42, "G");
		tt_write_full(rep[1], &g, sizeof(g), "L: report G");
		case_wait_go();
		st = reap_zombie(g, "G");
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 42,
		      "G: status %#x, want exit 42", st);
		tt_no_children();
		_exit(0);
	}
	close(rep[1]);
	tt_read_full(rep[0], &g, sizeof(g), "reading G's pid");

	for (i = 0; i < NZ; i++) {
		struct tt_stat st;

		tt_wait_state(z[i], 'Z', "zombie");
		check_nowait(z[i], codes[i], stats[i], "zombie");
		CHECK(tt_stat(z[i], &st) == 0 && st.ppid == root,
		      "zombie %d: ppid %d", (int)z[i], st.ppid);
		CHECK(st.pgrp == (i == 0 ? z[0] : root),
		      "zombie %d: pgid %d", (int)z[i], st.pgrp);
		case_log("zombie %d: exit code field %#x", (int)z[i],
			 st.exit_code);
	}
	pids[0] = root;
	for (i = 0; i < NZ; i++)
		pids[1 + i] = z[i];
	pids[1 + NZ] = l;
	pids[2 + NZ] = g;
	tt_write_tree(pids, 3 + NZ);
	case_ready();

	case_wait_go();
	for (i = 0; i < NZ; i++) {
		struct tt_stat st;

		CHECK(tt_stat(z[i], &st) == 0 && st.state == 'Z',
		      "zombie %d: not a zombie after restore (state %c)",
		      (int)z[i], st.state);
		check_nowait(z[i], codes[i], stats[i], "zombie");
	}
	for (i = 0; i < NZ; i++) {
		int st = reap_zombie(z[i], "zombie");

		CHECK(status_ok(i, st), "zombie %d: status %#x", (int)z[i], st);
	}
	tt_expect_exit(l, 0, "L");
	tt_no_children();
	case_pass();
}

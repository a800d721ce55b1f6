/*
 * t_orphan_session: a session whose leader has exited.
 *
 *   R   case root, PR_SET_CHILD_SUBREAPER
 *   `-- X   setsid(), forks Y and Z, exits 5 (reaped by R)
 *         Y   stays in group X of session X   -> reparented to R
 *         Z   setpgid(0,0): group Z in session X -> reparented to R
 *
 * After X is gone, session X and group X have no leader: pid X names no
 * process (/proc/X does not exist, kill(X, 0) fails with ESRCH) but still
 * names Y's group and both sessions, so it cannot be reused. A restore must
 * recreate exactly that: Y with sid and pgid X, Z with sid X and pgid Z,
 * both children of R, and no process X (nor a zombie, nor an extra child of
 * R) left behind.
 *
 * Y and Z report getpid/getppid/getsid/getpgid to R over a pipe once they
 * have been reparented (phase 1) and after go (phase 2). After go R also
 * checks that it is still a child subreaper, that its children are exactly
 * Y and Z (/proc/R/task/R/children), that pid X is still no process, then
 * signals group X (that is, Y) and Z: they exit 31 and 32.
 */
#include "t_tree.h"

struct report {
	int who; /* 0 = Y, 1 = Z */
	int phase;
	int pid, ppid, sid, pgid;
};

static void report(int fd, int who, int phase)
{
	struct report r = { who, phase, getpid(), getppid(), getsid(0),
			    getpgid(0) };

	tt_write_full(fd, &r, sizeof(r), "report");
}

/* orphan is the life of Y (who 0) and Z (who 1). */
static __attribute__((noreturn)) void orphan(int who, pid_t root, int fd)
{
	long long end = case_now() + TT_TIMEOUT_MS * 1000000LL;

	if (who == 1)
		CHECK(setpgid(0, 0) == 0, "Z: setpgid: %s", strerror(errno));
	/* Report once X is gone and R adopted us. */
	while (getppid() != root) {
		CHECK(case_now() < end, "%s: not reparented to the root",
		      who ? "Z" : "Y");
		case_sleep_ms(2);
	}
	report(fd, who, 1);
	case_wait_go();
	report(fd, who, 2);
	if (tt_wait_signal(SIGUSR1) != 0)
		case_fail("%s: no SIGUSR1 after go", who ? "Z" : "Y");
	_exit(31 + who);
}

static void read_reports(int fd, int phase, struct report *out)
{
	int i;

	for (i = 0; i < 2; i++) {
		struct report r;

		tt_read_full(fd, &r, sizeof(r), "reading a report");
		CHECK(r.phase == phase && (r.who == 0 || r.who == 1),
		      "bad report: who %d phase %d", r.who, r.phase);
		out[r.who] = r;
	}
}

/* children_of returns the children listed in /proc/pid/task/pid/children. */
static int children_of(pid_t pid, pid_t *out, int max)
{
	char path[64], buf[256], *p;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid,
		 (int)pid);
	if (case_read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	for (p = strtok(buf, " \n"); p && n < max; p = strtok(NULL, " \n"))
		out[n++] = atoi(p);
	return n;
}

static void check_x_gone(pid_t x)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d", (int)x);
	CHECK(access(path, F_OK) != 0, "pid %d (the old session leader) exists",
	      (int)x);
	CHECK(kill(x, 0) < 0 && errno == ESRCH,
	      "kill(%d, 0): want ESRCH (no such process), got %s", (int)x,
	      strerror(errno));
	/* ... but group X exists: Y is in it. */
	CHECK(kill(-x, 0) == 0, "group %d does not exist: %s", (int)x,
	      strerror(errno));
}

int main(int argc, char **argv)
{
	struct report before[2], after[2];
	pid_t root, x, y, z, pids[3], kids[8];
	int rep[2], sub = 0, n, i;

	case_init(argc, argv);
	root = getpid();
	CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0, "PR_SET_CHILD_SUBREAPER: %s",
	      strerror(errno));
	tt_pipe(rep);
	tt_block_signal(SIGUSR1);

	x = tt_fork();
	if (x == 0) {
		close(rep[0]);
		CHECK(setsid() == getpid(), "X: setsid: %s", strerror(errno));
		if (tt_fork() == 0)
			orphan(0, root, rep[1]);
		if (tt_fork() == 0)
			orphan(1, root, rep[1]);
		_exit(5);
	}
	close(rep[1]);
	tt_expect_exit(x, 5, "X");
	read_reports(rep[0], 1, before);
	y = before[0].pid;
	z = before[1].pid;
	CHECK(before[0].ppid == root && before[0].sid == x && before[0].pgid == x,
	      "Y: ppid/sid/pgid %d/%d/%d, want %d/%d/%d", before[0].ppid,
	      before[0].sid, before[0].pgid, (int)root, (int)x, (int)x);
	CHECK(before[1].ppid == root && before[1].sid == x && before[1].pgid == z,
	      "Z: ppid/sid/pgid %d/%d/%d, want %d/%d/%d", before[1].ppid,
	      before[1].sid, before[1].pgid, (int)root, (int)x, (int)z);
	check_x_gone(x);
	case_log("dead leader X %d; Y %d (group X), Z %d (group Z)", (int)x,
		 (int)y, (int)z);
	pids[0] = root;
	pids[1] = y;
	pids[2] = z;
	tt_write_tree(pids, 3);
	case_ready();

	case_wait_go();
	CHECK(prctl(PR_GET_CHILD_SUBREAPER, &sub) == 0 && sub == 1,
	      "PR_GET_CHILD_SUBREAPER: %d (%s), want 1", sub, strerror(errno));
	read_reports(rep[0], 2, after);
	for (i = 0; i < 2; i++)
		CHECK(after[i].pid == before[i].pid &&
			      after[i].ppid == before[i].ppid &&
			      after[i].sid == before[i].sid &&
			      after[i].pgid == before[i].pgid,
		      "%s after restore: pid/ppid/sid/pgid %d/%d/%d/%d, before %d/%d/%d/%d",
		      i ? "Z" : "Y", after[i].pid, after[i].ppid, after[i].sid,
		      after[i].pgid, before[i].pid, before[i].ppid,
		      before[i].sid, before[i].pgid);
	check_x_gone(x);
	n = children_of(root, kids, 8);
	CHECK(n == 2 && ((kids[0] == y && kids[1] == z) ||
			 (kids[0] == z && kids[1] == y)),
	      "the root's children are not exactly Y %d and Z %d (%d listed)",
	      (int)y, (int)z, n);
	CHECK(kill(-x, SIGUSR1) == 0, "kill group %d: %s", (int)x,
	      strerror(errno));
	CHECK(kill(z, SIGUSR1) == 0, "kill Z: %s", strerror(errno));
	tt_expect_exit(y, 31, "Y");
	tt_expect_exit(z, 32, "Z");
	tt_no_children();
	case_pass();
}

/*
 * t_pidns: the init of a pid namespace with children, dumped as its own
 * tree (the test dumps N, not the case root).
 *
 *   C   case root, not dumped: unshare(CLONE_NEWPID), forks N, writes N's
 *   |   pid (as the root namespace sees it) to WORKDIR/dumpme
 *   `-- N   pid 1 of the new namespace; setsid(); forks
 *         N2   pid 2 in the namespace
 *         N3   pid 3 in the namespace
 *
 * The dump of N kills N (and with it the namespace); C reaps it like any
 * parent. The restored N is a child of ctr-cr (or of the test, its
 * subreaper, after restore -d): C is not its parent any more, so nothing
 * passes between C and the tree but files in WORKDIR. C prints nothing
 * between ready and go: WORKDIR/out is held by the dumped tree too, and its
 * size must not change between a dump and the restore.
 *
 * Before ready N2 and N3 report (over a pipe inside the tree) their pids in
 * the namespace and in the root namespace (NSpid); N writes tree.before
 * (root-namespace pids) and WORKDIR/ns.ready, then C prints ready.
 *
 * After go: N checks getpid() == 1, getppid() == 0 (its parent is outside
 * the namespace), getsid(0) == getpgid(0) == 1; N2 and N3 report getpid()
 * 2 and 3, getppid() 1, sid and pgid 1, and the same root-namespace pids,
 * and exit 42 and 43; N reaps them with those statuses, forks a new child
 * in the namespace (it sees a pid > 1 and exits 7), then writes
 * WORKDIR/ns.result ("PASS" or "FAIL: ...") and exits 0 (1 on failure).
 * C waits for ns.result (or for N to be gone without one) and ends with
 * its verdict; when N is still its child (no C/R) it also reaps N with
 * status 0.
 */
#include "t_pidns.h"

struct report {
	int inner, outer, ppid, sid, pgid, phase;
};

/* outer_pid returns the first NSpid of /proc/self/status: our pid in the
 * root namespace (/proc is the root namespace's proc). */
static int outer_pid(void)
{
	char buf[4096], *p;

	CHECK(case_read_file("/proc/self/status", buf, sizeof(buf)) > 0,
	      "read /proc/self/status");
	p = strstr(buf, "\nNSpid:");
	CHECK(p, "no NSpid in /proc/self/status");
	return atoi(p + strlen("\nNSpid:"));
}

static void report(int fd, int phase)
{
	struct report r = { getpid(), outer_pid(), getppid(), getsid(0),
			    getpgid(0), phase };

	tt_write_full(fd, &r, sizeof(r), "report");
}

static __attribute__((noreturn)) void kid(int inner, int fd)
{
	CHECK(getpid() == inner && getppid() == 1,
	      "ns child: pid %d ppid %d, want %d 1", (int)getpid(),
	      (int)getppid(), inner);
	report(fd, 1);
	case_wait_go();
	report(fd, 2);
	_exit(40 + inner);
}

/* read_reports reads the reports of N2 and N3 (index inner-2). */
static void read_reports(int fd, int phase, struct report *out)
{
	int i;

	for (i = 0; i < 2; i++) {
		struct report r;

		tt_read_full(fd, &r, sizeof(r), "ns init: reading a report");
		NCHECK(r.phase == phase && (r.inner == 2 || r.inner == 3),
		       "bad report: pid %d phase %d", r.inner, r.phase);
		out[r.inner - 2] = r;
	}
}

static __attribute__((noreturn)) void ns_init(void)
{
	struct report before[2], after[2];
	pid_t pids[3], k;
	int rep[2], i, st;

	NCHECK(getpid() == 1, "ns init: pid %d, want 1", (int)getpid());
	NCHECK(setsid() == 1, "ns init: setsid: %s", strerror(errno));
	tt_pipe(rep);
	for (i = 2; i <= 3; i++)
		if (tt_fork() == 0) {
			close(rep[0]);
			kid(i, rep[1]);
		}
	close(rep[1]);
	read_reports(rep[0], 1, before);
	pids[0] = outer_pid();
	for (i = 0; i < 2; i++) {
		NCHECK(before[i].ppid == 1 && before[i].sid == 1 &&
			       before[i].pgid == 1,
		       "ns pid %d: ppid/sid/pgid %d/%d/%d, want 1/1/1",
		       before[i].inner, before[i].ppid, before[i].sid,
		       before[i].pgid);
		pids[1 + i] = before[i].outer;
	}
	case_log("ns init %d, children %d (2) and %d (3)", (int)pids[0],
		 (int)pids[1], (int)pids[2]);
	tt_write_tree(pids, 3);
	write_file("ns.ready", "ready\n");

	case_wait_go();
	NCHECK(getpid() == 1 && getppid() == 0 && getsid(0) == 1 &&
		       getpgid(0) == 1,
	       "ns init after restore: pid %d ppid %d sid %d pgid %d, want 1 0 1 1",
	       (int)getpid(), (int)getppid(), (int)getsid(0), (int)getpgid(0));
	NCHECK(outer_pid() == pids[0], "ns init: root-namespace pid %d, was %d",
	       outer_pid(), (int)pids[0]);
	read_reports(rep[0], 2, after);
	for (i = 0; i < 2; i++)
		NCHECK(after[i].outer == before[i].outer && after[i].ppid == 1 &&
			       after[i].sid == 1 && after[i].pgid == 1,
		       "ns pid %d after restore: outer %d ppid %d sid %d pgid %d (outer was %d)",
		       after[i].inner, after[i].outer, after[i].ppid,
		       after[i].sid, after[i].pgid, before[i].outer);
	for (i = 2; i <= 3; i++) {
		st = tt_wait(i, "ns child");
		NCHECK(WIFEXITED(st) && WEXITSTATUS(st) == 40 + i,
		       "ns pid %d: status %#x, want exit %d", i, st, 40 + i);
	}
	/* The namespace still works: a new process gets a new pid in it. */
	k = tt_fork();
	if (k == 0)
		_exit(getpid() > 1 ? 7 : 8);
	NCHECK(k > 1, "ns init: new child pid %d", (int)k);
	st = tt_wait(k, "new ns child");
	NCHECK(WIFEXITED(st) && WEXITSTATUS(st) == 7,
	       "new ns child %d: status %#x", (int)k, st);
	NCHECK(waitpid(-1, &st, WNOHANG) < 0 && errno == ECHILD,
	       "ns init: a child is left");
	write_file("ns.result", "PASS\n");
	_exit(0);
}

int main(int argc, char **argv)
{
	return pidns_main(argc, argv, ns_init);
}

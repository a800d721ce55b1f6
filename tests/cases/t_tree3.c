/*
 * t_tree3: a three-level tree with two sessions and four process groups.
 *
 *   R   case root: leads its session and group (the harness setsid()s it)
 *   |-- A    setsid(): leads session A and group A       pdeathsig SIGKILL
 *   |   `-- GA   setpgid(0,0): own group GA in session A  pdeathsig SIGTERM
 *   `-- B    setpgid(0,0): group B in R's session         pdeathsig SIGKILL
 *       `-- GB   inherits group B (R's session)           pdeathsig SIGHUP
 *
 * Every member keeps a secret (derived from its pid, kept on the heap next
 * to a 64 KiB pattern) and a loop counter; it polls WORKDIR/go every 10 ms.
 * Members report to R over one pipe created before the forks (fixed-size
 * records, atomic): once set up (phase 1) and after go (phase 2): getpid,
 * getppid, getsid, getpgid, PR_GET_PDEATHSIG, the secret, the counter and
 * whether the heap pattern is intact.
 *
 * Before ready R checks the phase-1 reports against the intended layout and
 * writes tree.before. After go R requires phase-2 reports equal to phase 1
 * (counter not smaller), /proc agreeing, then signals the groups: SIGUSR1
 * to A and to group GA, to group B (B and GB). Each member exits on SIGUSR1
 * (blocked, taken with sigtimedwait): GA 12, GB 22; A and B first reap their
 * child with its status, then exit 11 and 21. R reaps A and B with those
 * statuses and must have no child left.
 */
#include "t_tree.h"

enum { ROLE_A, ROLE_GA, ROLE_B, ROLE_GB, NROLES };

static const char *role_name[NROLES] = { "A", "GA", "B", "GB" };
static const int role_pdeath[NROLES] = { SIGKILL, SIGTERM, SIGKILL, SIGHUP };
static const int role_exit[NROLES] = { 11, 12, 21, 22 };

struct report {
	int role;
	int phase;
	int pid, ppid, sid, pgid;
	int pdeathsig;
	int mem_ok;
	uint64_t secret;
	uint64_t counter;
};

#define HEAP_LEN (64 * 1024)

static int rep_w; /* write end of the report pipe (members) */

static void send_report(int role, int phase, uint64_t secret,
			uint64_t counter, const unsigned char *heap)
{
	struct report r = { 0 };
	unsigned char tmp[HEAP_LEN];

	r.role = role;
	r.phase = phase;
	r.pid = getpid();
	r.ppid = getppid();
	r.sid = getsid(0);
	r.pgid = getpgid(0);
	CHECK(prctl(PR_GET_PDEATHSIG, &r.pdeathsig) == 0, "PR_GET_PDEATHSIG: %s",
	      strerror(errno));
	tt_fill(secret, 0, tmp, sizeof(tmp));
	r.mem_ok = memcmp(tmp, heap, HEAP_LEN) == 0;
	r.secret = secret;
	r.counter = counter;
	tt_write_full(rep_w, &r, sizeof(r), "report");
}

/* member runs the life of a non-root process; child is its own child (GA,
 * GB) or 0. Never returns. */
static __attribute__((noreturn)) void member(int role, pid_t child)
{
	volatile uint64_t counter = 0;
	uint64_t secret = tt_mix((uint64_t)getpid() << 8 | (uint64_t)role);
	unsigned char *heap = malloc(HEAP_LEN);
	int st;

	CHECK(heap, "malloc");
	tt_fill(secret, 0, heap, HEAP_LEN);
	send_report(role, 1, secret, counter, heap);

	while (!case_go_requested()) {
		counter++;
		case_sleep_ms(10);
	}
	send_report(role, 2, secret, counter, heap);

	if (tt_wait_signal(SIGUSR1) != 0)
		case_fail("%s: no SIGUSR1 after go", role_name[role]);
	if (child) {
		st = tt_wait(child, role_name[role + 1]);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != role_exit[role + 1])
			case_fail("%s: child %d ended with status %#x, want exit %d",
				  role_name[role], (int)child, st,
				  role_exit[role + 1]);
		tt_no_children();
	}
	_exit(role_exit[role]);
}

static void check_report(const struct report *got, const struct report *want)
{
	const char *n = role_name[want->role];

	CHECK(got->pid == want->pid && got->ppid == want->ppid &&
		      got->sid == want->sid && got->pgid == want->pgid,
	      "%s after restore: pid/ppid/sid/pgid %d/%d/%d/%d, before %d/%d/%d/%d",
	      n, got->pid, got->ppid, got->sid, got->pgid, want->pid,
	      want->ppid, want->sid, want->pgid);
	CHECK(got->pdeathsig == want->pdeathsig,
	      "%s: parent-death signal %d, was %d", n, got->pdeathsig,
	      want->pdeathsig);
	CHECK(got->secret == want->secret, "%s: secret %#llx, was %#llx", n,
	      (unsigned long long)got->secret,
	      (unsigned long long)want->secret);
	CHECK(got->counter >= want->counter, "%s: counter went back %llu -> %llu",
	      n, (unsigned long long)want->counter,
	      (unsigned long long)got->counter);
	CHECK(got->mem_ok, "%s: heap pattern damaged", n);
}

/* read_reports reads one report of the phase from every role into out. */
static void read_reports(int rep_r, int phase, struct report *out)
{
	int seen = 0, i;

	for (i = 0; i < NROLES; i++) {
		struct report r;

		tt_read_full(rep_r, &r, sizeof(r), "reading a member's report");
		CHECK(r.role >= 0 && r.role < NROLES && r.phase == phase,
		      "bad report: role %d phase %d (want phase %d)", r.role,
		      r.phase, phase);
		CHECK(!(seen & 1 << r.role), "two phase-%d reports from %s",
		      phase, role_name[r.role]);
		seen |= 1 << r.role;
		out[r.role] = r;
	}
}

int main(int argc, char **argv)
{
	struct report before[NROLES], after[NROLES];
	pid_t root, a, b, pids[1 + NROLES];
	int rep[2], i;

	case_init(argc, argv);
	root = getpid();
	CHECK(getsid(0) == root && getpgid(0) == root,
	      "the case root should lead its session and group (sid %d pgid %d)",
	      (int)getsid(0), (int)getpgid(0));
	tt_pipe(rep);
	rep_w = rep[1];
	tt_block_signal(SIGUSR1); /* inherited: members take it synchronously */

	a = tt_fork();
	if (a == 0) {
		pid_t ga;

		close(rep[0]);
		CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0, "A: pdeathsig");
		CHECK(setsid() == getpid(), "A: setsid: %s", strerror(errno));
		ga = tt_fork();
		if (ga == 0) {
			CHECK(prctl(PR_SET_PDEATHSIG, SIGTERM) == 0,
			      "GA: pdeathsig");
			CHECK(setpgid(0, 0) == 0, "GA: setpgid: %s",
			      strerror(errno));
			member(ROLE_GA, 0);
		}
		member(ROLE_A, ga);
	}
	b = tt_fork();
	if (b == 0) {
		pid_t gb;

		close(rep[0]);
		CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0, "B: pdeathsig");
		CHECK(setpgid(0, 0) == 0, "B: setpgid: %s", strerror(errno));
		gb = tt_fork();
		if (gb == 0) {
			CHECK(prctl(PR_SET_PDEATHSIG, SIGHUP) == 0,
			      "GB: pdeathsig");
			member(ROLE_GB, 0);
		}
		member(ROLE_B, gb);
	}
	close(rep[1]);

	/* Phase 1: the layout is the intended one. */
	read_reports(rep[0], 1, before);
	{
		const struct report *A = &before[ROLE_A], *GA = &before[ROLE_GA];
		const struct report *B = &before[ROLE_B], *GB = &before[ROLE_GB];

		CHECK(A->pid == a && A->ppid == root && A->sid == a && A->pgid == a,
		      "A: pid/ppid/sid/pgid %d/%d/%d/%d", A->pid, A->ppid,
		      A->sid, A->pgid);
		CHECK(GA->ppid == a && GA->sid == a && GA->pgid == GA->pid,
		      "GA: pid/ppid/sid/pgid %d/%d/%d/%d", GA->pid, GA->ppid,
		      GA->sid, GA->pgid);
		CHECK(B->pid == b && B->ppid == root && B->sid == root &&
			      B->pgid == b,
		      "B: pid/ppid/sid/pgid %d/%d/%d/%d", B->pid, B->ppid,
		      B->sid, B->pgid);
		CHECK(GB->ppid == b && GB->sid == root && GB->pgid == b,
		      "GB: pid/ppid/sid/pgid %d/%d/%d/%d", GB->pid, GB->ppid,
		      GB->sid, GB->pgid);
	}
	for (i = 0; i < NROLES; i++) {
		CHECK(before[i].pdeathsig == role_pdeath[i] && before[i].mem_ok,
		      "%s: pdeathsig %d mem_ok %d", role_name[i],
		      before[i].pdeathsig, before[i].mem_ok);
		case_log("%s: pid %d ppid %d sid %d pgid %d", role_name[i],
			 before[i].pid, before[i].ppid, before[i].sid,
			 before[i].pgid);
	}
	pids[0] = root;
	for (i = 0; i < NROLES; i++)
		pids[1 + i] = before[i].pid;
	tt_write_tree(pids, 1 + NROLES);
	case_ready();

	case_wait_go();
	CHECK(getpid() == root && getsid(0) == root && getpgid(0) == root,
	      "root: pid %d sid %d pgid %d, want all %d", (int)getpid(),
	      (int)getsid(0), (int)getpgid(0), (int)root);
	read_reports(rep[0], 2, after);
	for (i = 0; i < NROLES; i++) {
		struct tt_stat st;

		check_report(&after[i], &before[i]);
		CHECK(tt_stat(before[i].pid, &st) == 0 &&
			      st.ppid == before[i].ppid &&
			      st.pgrp == before[i].pgid &&
			      st.sid == before[i].sid,
		      "%s: /proc/%d/stat disagrees", role_name[i],
		      before[i].pid);
	}

	/* The groups exist as groups: signal them as such. */
	CHECK(kill(a, SIGUSR1) == 0, "kill A: %s", strerror(errno));
	CHECK(kill(-before[ROLE_GA].pid, SIGUSR1) == 0, "kill group GA: %s",
	      strerror(errno));
	CHECK(kill(-b, SIGUSR1) == 0, "kill group B: %s", strerror(errno));
	tt_expect_exit(a, role_exit[ROLE_A], "A");
	tt_expect_exit(b, role_exit[ROLE_B], "B");
	tt_no_children();
	case_pass();
}

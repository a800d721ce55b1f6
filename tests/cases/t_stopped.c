/*
 * t_stopped: a task stopped by SIGSTOP stays stopped across C/R.
 *
 *   R   case root
 *   `-- S   own process group (like a shell job); counts in a loop into a
 *           MAP_SHARED|MAP_ANONYMOUS page shared with R (~1000/s)
 *
 * Before ready R sees the counter move, sends SIGSTOP, waits for /proc state
 * T (a group stop, not 't'), and records the counter: it must not move for
 * 200 ms.
 *
 * After go (no signal was sent in between): S is still in state T, not
 * traced (TracerPid 0), the counter still has the recorded value and stays
 * there for 200 ms. R sends SIGCONT: the counter moves again; R sets the
 * shared quit flag and S exits 0.
 */
#include "t_tree.h"

#include <sys/mman.h>

struct shared {
	volatile uint64_t counter;
	volatile int quit;
};

/* tracer_of returns TracerPid from /proc/pid/status, or -1. */
static int tracer_of(pid_t pid)
{
	char path[64], buf[4096], *p;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (case_read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	p = strstr(buf, "\nTracerPid:");
	return p ? atoi(p + strlen("\nTracerPid:")) : -1;
}

/* wait_counter_moves waits until the counter exceeds from. */
static void wait_counter_moves(struct shared *sh, uint64_t from,
			       const char *when)
{
	long long end = case_now() + TT_TIMEOUT_MS * 1000000LL;

	while (sh->counter <= from) {
		CHECK(case_now() < end, "%s: the counter does not move (%llu)",
		      when, (unsigned long long)from);
		case_sleep_ms(2);
	}
}

/* check_still_stopped requires S in state T with the counter at c for
 * 200 ms. */
static void check_still_stopped(pid_t s, struct shared *sh, uint64_t c,
				const char *when)
{
	struct tt_stat st;
	int i;

	for (i = 0; i < 20; i++) {
		CHECK(tt_stat(s, &st) == 0 && st.state == 'T',
		      "%s: S (pid %d) in state %c, want T (stopped)", when,
		      (int)s, st.state);
		CHECK(sh->counter == c, "%s: S counts while stopped: %llu -> %llu",
		      when, (unsigned long long)c,
		      (unsigned long long)sh->counter);
		case_sleep_ms(10);
	}
}

int main(int argc, char **argv)
{
	struct shared *sh;
	struct tt_stat st;
	pid_t root, s, pids[2];
	uint64_t c0;

	case_init(argc, argv);
	root = getpid();
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		  -1, 0);
	CHECK(sh != MAP_FAILED, "mmap: %s", strerror(errno));

	s = tt_fork();
	if (s == 0) {
		setpgid(0, 0);
		while (!sh->quit) {
			sh->counter++;
			case_sleep_ms(1);
		}
		_exit(0);
	}
	setpgid(s, s); /* no race with the child's own call */

	wait_counter_moves(sh, 10, "before SIGSTOP");
	CHECK(kill(s, SIGSTOP) == 0, "SIGSTOP: %s", strerror(errno));
	tt_wait_state(s, 'T', "S after SIGSTOP");
	c0 = sh->counter;
	check_still_stopped(s, sh, c0, "before ready");
	CHECK(tt_stat(s, &st) == 0 && st.pgrp == s && st.ppid == root,
	      "S: pgid %d ppid %d", st.pgrp, st.ppid);
	case_log("S %d stopped at counter %llu", (int)s, (unsigned long long)c0);
	pids[0] = root;
	pids[1] = s;
	tt_write_tree(pids, 2);
	case_ready();

	case_wait_go();
	check_still_stopped(s, sh, c0, "after restore");
	CHECK(tracer_of(s) == 0, "S is traced (TracerPid %d)", tracer_of(s));
	CHECK(kill(s, SIGCONT) == 0, "SIGCONT: %s", strerror(errno));
	wait_counter_moves(sh, c0, "after SIGCONT");
	CHECK(tt_stat(s, &st) == 0 && st.state != 'T' && st.state != 't',
	      "S still stopped after SIGCONT (state %c)", st.state);
	sh->quit = 1;
	tt_expect_exit(s, 0, "S");
	tt_no_children();
	case_pass();
}

/*
 * t_pidns.h: the driver shared by the cases whose tree is a pid namespace
 * of its own (t_pidns, t_pidns_group, t_mntns). C, the case process,
 * unshares CLONE_NEWPID and forks N, pid 1 of the new namespace, which runs
 * the case's ns_init: N writes WORKDIR/ns.ready once set up, and after go
 * its verdict to WORKDIR/ns.result ("PASS" or "FAIL: ..."). C writes N's
 * pid to WORKDIR/dumpme (the test dumps N's tree), prints ready, reaps N
 * when the dump kills it (its pid must be free for the restore), then waits
 * for ns.result (or for N to be gone without one) and ends with its
 * verdict; when N is still its child (no C/R) it also reaps N with status 0.
 */
#ifndef T_PIDNS_H
#define T_PIDNS_H

#include "t_tree.h"

#include <sched.h>

static char result_path[PATH_MAX + 16];

/* ns_fail: N's failure: the verdict goes to ns.result, then exit 1. */
__attribute__((format(printf, 1, 2), noreturn)) static void
ns_fail(const char *fmt, ...)
{
	char msg[512], tmp[PATH_MAX + 32];
	va_list ap;
	FILE *f;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	case_log("ns init: FAIL: %s", msg);
	snprintf(tmp, sizeof(tmp), "%s.tmp", result_path);
	f = fopen(tmp, "we");
	if (f) {
		fprintf(f, "FAIL: %s\n", msg);
		fclose(f);
		rename(tmp, result_path);
	}
	_exit(1);
}

#define NCHECK(cond, ...)                                                      \
	do {                                                                   \
		if (!(cond))                                                   \
			ns_fail(__VA_ARGS__);                                  \
	} while (0)

/* write_file writes s to WORKDIR/name atomically. */
static void write_file(const char *name, const char *s)
{
	char path[PATH_MAX + 32], tmp[PATH_MAX + 40];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", case_workdir, name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "we");
	CHECK(f && fputs(s, f) >= 0 && fclose(f) == 0, "write %s: %s", tmp,
	      strerror(errno));
	CHECK(rename(tmp, path) == 0, "rename %s: %s", tmp, strerror(errno));
}

/* exists reports whether WORKDIR/name exists. */
static int exists(const char *name)
{
	char path[PATH_MAX + 32];

	snprintf(path, sizeof(path), "%s/%s", case_workdir, name);
	return access(path, F_OK) == 0;
}

/* gone reports whether pid n (not our child) has ended: no process, or a
 * zombie waiting for its parent. */
static int gone(pid_t n)
{
	struct tt_stat st;

	return tt_stat(n, &st) != 0 || st.state == 'Z' || st.state == 'X';
}

/* pidns_main is the case's main: C's part, with ns_init as N's. */
static int pidns_main(int argc, char **argv, void (*ns_init)(void) __attribute__((noreturn)))
{
	char buf[600];
	long long end;
	pid_t n, r;
	int st, ours = 1, status = -1;

	case_init(argc, argv);
	snprintf(result_path, sizeof(result_path), "%s/ns.result", case_workdir);
	CHECK(unshare(CLONE_NEWPID) == 0, "unshare(CLONE_NEWPID): %s",
	      strerror(errno));
	n = tt_fork();
	if (n == 0)
		ns_init();
	snprintf(buf, sizeof(buf), "%d\n", (int)n);
	write_file("dumpme", buf);

	end = case_now() + TT_TIMEOUT_MS * 1000000LL;
	while (!exists("ns.ready")) {
		r = waitpid(n, &st, WNOHANG);
		if (r == n) {
			if (case_read_file(result_path, buf, sizeof(buf)) > 0)
				case_fail("ns init: %s", buf);
			case_fail("ns init %d ended before ready: status %#x",
				  (int)n, st);
		}
		CHECK(case_now() < end, "ns init %d: not ready", (int)n);
		case_sleep_ms(5);
	}
	case_ready();

	/* Reap N when the dump kills it: its pid must be free for the
	 * restore. */
	while (!case_go_requested()) {
		if (ours && waitpid(n, &st, WNOHANG) == n) {
			/* No output here: the dumped tree holds the out file,
			 * whose size must not change before the restore. */
			ours = 0;
		}
		case_sleep_ms(5);
	}

	end = case_now() + TT_TIMEOUT_MS * 1000000LL;
	for (;;) {
		if (ours && waitpid(n, &st, WNOHANG) == n) {
			ours = 0;
			status = st;
		}
		if (exists("ns.result"))
			break;
		if (!ours && gone(n) && !exists("ns.result"))
			case_fail("ns init %d ended without a result", (int)n);
		CHECK(case_now() < end, "no result from the ns init %d", (int)n);
		case_sleep_ms(5);
	}
	if (ours)
		status = tt_wait(n, "ns init");
	CHECK(case_read_file(result_path, buf, sizeof(buf)) > 0, "read ns.result");
	buf[strcspn(buf, "\n")] = 0;
	if (strcmp(buf, "PASS") != 0)
		case_fail("ns init: %s", buf);
	CHECK(status == -1 || (WIFEXITED(status) && WEXITSTATUS(status) == 0),
	      "ns init ended with status %#x", status);
	case_pass();
}

#endif

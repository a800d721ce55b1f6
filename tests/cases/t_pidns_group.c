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
#include "t_tree.h"

#include <sched.h>

static char result_path[PATH_MAX + 16];

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

static int exists(const char *name)
{
	char path[PATH_MAX + 32];

	snprintf(path, sizeof(path), "%s/%s", case_workdir, name);
	return access(path, F_OK) == 0;
}

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

/* gone reports whether pid n (not our child) has ended: no process, or a
 * zombie waiting for its parent. */
static int gone(pid_t n)
{
	struct tt_stat st;

	return tt_stat(n, &st) != 0 || st.state == 'Z' || st.state == 'X';
}

int main(int argc, char **argv)
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

/*
 * e_orphan_group.c - a process group whose leader has exited.
 *
 *   R  (session leader, child subreaper)
 *   `-- A  setpgid(0,0), forks B (in group A), exits (reaped by R)
 *         B  reparented to R, still in group A: pid A names only a group
 *
 * After go: B checks from inside that its group is still A (a pid that is
 * no process) in R's session, and reports through WORKDIR/b.result; R
 * checks B is its child, signals group A (B exits 0 on SIGTERM), reaps it.
 */
#include "case.h"
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	case_init(argc, argv);
	if (prctl(PR_SET_CHILD_SUBREAPER, 1))
		case_fail("subreaper: %s", strerror(errno));
	pid_t root = getpid();
	int pfd[2];
	if (pipe(pfd))
		case_fail("pipe");
	pid_t a = fork();
	if (a == 0) {
		setpgid(0, 0);
		pid_t b = fork();
		if (b == 0) {
			signal(SIGTERM, on_term);
			close(pfd[0]);
			pid_t me = getpid();
			if (write(pfd[1], &me, sizeof(me)) != sizeof(me))
				_exit(3);
			close(pfd[1]);
			pid_t group = getpgid(0);
			while (!case_go_requested() && !term)
				usleep(10000);
			char res[128];
			const char *v = "PASS";
			if (getpgid(0) != group || getsid(0) != root || getppid() != root)
				v = "FAIL";
			snprintf(res, sizeof(res), "%s pgid %d (want %d) sid %d ppid %d\n", v, getpgid(0), group, getsid(0), getppid());
			FILE *f = fopen("b.result.tmp", "w");
			fputs(res, f);
			fclose(f);
			rename("b.result.tmp", "b.result");
			while (!term)
				usleep(10000);
			_exit(0);
		}
		_exit(0);
	}
	close(pfd[1]);
	pid_t b;
	if (read(pfd[0], &b, sizeof(b)) != sizeof(b))
		case_fail("read B's pid");
	int st;
	if (waitpid(a, &st, 0) != a)
		case_fail("reap A");
	/* wait until B is reparented to us */
	for (int i = 0; i < 500; i++) {
		char path[64], buf[512];
		snprintf(path, sizeof(path), "/proc/%d/task/%d/children", root, root);
		FILE *f = fopen(path, "r");
		int found = 0;
		if (f) {
			if (fgets(buf, sizeof(buf), f) && atoi(buf) == b)
				found = 1;
			fclose(f);
		}
		if (found)
			break;
		usleep(10000);
	}
	if (getpgid(b) != a)
		case_fail("B's group is %d, want A %d", getpgid(b), a);
	case_log("A %d gone, B %d in group %d", a, b, getpgid(b));
	case_ready();
	case_wait_go();
	char res[128] = "";
	for (int i = 0; i < 1000 && access("b.result", F_OK); i++)
		usleep(10000);
	FILE *f = fopen("b.result", "r");
	if (!f || !fgets(res, sizeof(res), f))
		case_fail("no result from B");
	if (strncmp(res, "PASS", 4))
		case_fail("B: %s", res);
	kill(-a, SIGTERM);
	if (waitpid(b, &st, 0) != b || !WIFEXITED(st) || WEXITSTATUS(st))
		case_fail("B: status %#x", st);
	case_pass();
}

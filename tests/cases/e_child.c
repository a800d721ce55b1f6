/*
 * e_child.c - a process with a child: both are dumped and restored. After
 * go: the child is still ours and alive, and is reaped with its exit status.
 */
#include "case.h"
#include <signal.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	case_init(argc, argv);
	pid_t child = fork();
	if (child < 0)
		case_fail("fork: %s", strerror(errno));
	if (child == 0) {
		while (!case_go_requested())
			usleep(10000);
		_exit(7);
	}
	case_log("child %d", child);
	case_ready();
	case_wait_go();
	int st;
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 7)
		case_fail("child %d: status %#x", child, st);
	case_pass();
}

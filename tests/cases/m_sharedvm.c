/*
 * m_sharedvm.c - a child made with clone(CLONE_VM) without CLONE_THREAD: a
 * process of its own that shares its parent's address space. The dump
 * must refuse it (two processes restored with one memory each would no
 * longer see each other's writes). After go: the parent writes a word the
 * child waits to see, through the shared memory, and the child answers.
 */
#include "case.h"
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>

static volatile int ping, pong;

static int child(void *arg)
{
	(void)arg;
	while (!ping)
		usleep(1000);
	pong = 1;
	return 0;
}

int main(int argc, char **argv)
{
	case_init(argc, argv);
	static char stack[256 << 10];
	pid_t c = clone(child, stack + sizeof(stack), CLONE_VM | SIGCHLD, NULL);
	if (c < 0)
		case_fail("clone: %s", strerror(errno));
	case_log("child %d shares the address space", c);
	case_ready();
	case_wait_go();
	ping = 1;
	for (int i = 0; i < 5000 && !pong; i++)
		usleep(1000);
	if (!pong)
		case_fail("the child did not see the write: not the same memory");
	int st;
	if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		case_fail("child: status %#x", st);
	case_pass();
}

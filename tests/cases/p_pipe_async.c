/*
 * p_pipe_async: fd 3/4 are a pipe whose read end has O_ASYNC (SIGIO to us,
 * F_SETOWN): a dump must refuse it by name (the signal owner is not saved)
 * and leave us running. After go the flags are unchanged.
 */
#include "case.h"

#include <fcntl.h>

int main(int argc, char **argv)
{
	int p[2], fl;

	case_init(argc, argv);
	if (pipe(p) != 0 || fcntl(p[0], F_SETOWN, getpid()) != 0 ||
	    fcntl(p[0], F_SETFL, O_ASYNC) != 0)
		case_fail("pipe with O_ASYNC: %s", strerror(errno));
	fl = fcntl(p[0], F_GETFL);
	case_ready();
	case_wait_go();
	if (fcntl(p[0], F_GETFL) != fl)
		case_fail("flags changed");
	case_pass();
}

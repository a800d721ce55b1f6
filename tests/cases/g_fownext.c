/*
 * g_fownext: a file whose F_SETOWN owner is a process outside the dump
 * (the case's parent) cannot be restored exactly: the dump must fail and
 * leave the case as it was.
 *
 * Setup: WORKDIR/o.dat open as fd 42, owner the parent process (F_SETOWN),
 * F_SETSIG SIGUSR1.
 *
 * After "go": fd 42 still has the parent as owner and SIGUSR1 as signal.
 */
#define _GNU_SOURCE
#include "case.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>

int main(int argc, char **argv)
{
	case_init(argc, argv);
	int fd = open("o.dat", O_RDWR | O_CREAT, 0600);
	if (fd < 0 || dup2(fd, 42) != 42)
		case_fail("open: %s", strerror(errno));
	close(fd);
	pid_t parent = getppid();
	if (fcntl(42, F_SETOWN, parent) != 0 || fcntl(42, F_SETSIG, SIGUSR1) != 0)
		case_fail("F_SETOWN %d: %s", parent, strerror(errno));
	case_ready();
	case_wait_go();
	if (fcntl(42, F_GETOWN) != parent || fcntl(42, F_GETSIG) != SIGUSR1)
		case_fail("owner %d sig %d, were %d %d", fcntl(42, F_GETOWN),
			  fcntl(42, F_GETSIG), parent, SIGUSR1);
	case_pass();
}

/*
 * p_pipe_sync: fd 5 is a second description of a pipe's read end,
 * reopened through /proc/self/fd with O_DSYNC, a flag F_SETFL cannot set:
 * a dump must refuse it by name and leave us running. After go the flags
 * are unchanged.
 */
#include "case.h"

#include <fcntl.h>

int main(int argc, char **argv)
{
	int p[2], fd, fl;
	char path[64];

	case_init(argc, argv);
	if (pipe(p) != 0)
		case_fail("pipe: %s", strerror(errno));
	snprintf(path, sizeof path, "/proc/self/fd/%d", p[0]);
	fd = open(path, O_RDONLY | O_NONBLOCK | O_DSYNC);
	if (fd < 0)
		case_fail("reopen with O_DSYNC: %s", strerror(errno));
	fl = fcntl(fd, F_GETFL);
	if (!(fl & O_DSYNC))
		case_fail("O_DSYNC not kept: %#o", fl);
	case_ready();
	case_wait_go();
	if (fcntl(fd, F_GETFL) != fl)
		case_fail("flags changed");
	case_pass();
}

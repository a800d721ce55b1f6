/*
 * g_tmplinked: an fd opened with O_TMPFILE whose file was linked since
 * keeps O_TMPFILE in its open flags, which no reopen can give: the dump
 * must fail and leave the case as it was.
 *
 * Setup: an O_TMPFILE in WORKDIR as fd 42, written, linked as
 * WORKDIR/linked with linkat(AT_EMPTY_PATH).
 *
 * After "go": fd 42 has the same link text (the kernel keeps showing
 * "#<ino> (deleted)" after the linkat), contents and flags.
 */
#define _GNU_SOURCE
#include "case.h"

#include <errno.h>
#include <fcntl.h>

int main(int argc, char **argv)
{
	char link[PATH_MAX], want[PATH_MAX + 8], buf[4];

	case_init(argc, argv);
	int fd = open(argv[1], O_TMPFILE | O_RDWR, 0600);
	if (fd < 0 || dup2(fd, 42) != 42)
		case_fail("O_TMPFILE: %s", strerror(errno));
	close(fd);
	if (write(42, "abc", 3) != 3 ||
	    linkat(42, "", AT_FDCWD, "linked", AT_EMPTY_PATH) != 0)
		case_fail("write/linkat: %s", strerror(errno));
	int fl = fcntl(42, F_GETFL);
	/* the fd keeps the O_TMPFILE's name, "#<ino> (deleted)" */
	ssize_t n = readlink("/proc/self/fd/42", want, sizeof want - 1);
	if (n <= 0)
		case_fail("readlink");
	want[n] = 0;
	case_ready();
	case_wait_go();
	n = readlink("/proc/self/fd/42", link, sizeof link - 1);
	if (n <= 0)
		case_fail("readlink");
	link[n] = 0;
	if (strcmp(link, want) || fcntl(42, F_GETFL) != fl ||
	    pread(42, buf, 3, 0) != 3 || memcmp(buf, "abc", 3))
		case_fail("fd 42 changed: %s flags %o", link, fcntl(42, F_GETFL));
	case_pass();
}

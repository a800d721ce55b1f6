/*
 * g_exedel: a process whose executable was deleted after it started (a
 * binary replaced by an upgrade) keeps it as its exe, deleted.
 *
 * Setup: the case copies itself to WORKDIR/exe-copy, executes the copy,
 * which removes it.
 *
 * After "go": /proc/self/exe reads "WORKDIR/exe-copy (deleted)" and holds
 * the same bytes; the name is not back in WORKDIR.
 */
#define _GNU_SOURCE
#include "case.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

static unsigned long sum_exe(long *size)
{
	unsigned long h = 5381;
	char buf[4096];
	int fd = open("/proc/self/exe", O_RDONLY);
	if (fd < 0)
		case_fail("open exe: %s", strerror(errno));
	*size = 0;
	for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0; *size += n)
		for (ssize_t i = 0; i < n; i++)
			h = h * 33 + (unsigned char)buf[i];
	close(fd);
	return h;
}

int main(int argc, char **argv)
{
	char copy[PATH_MAX], link[PATH_MAX], want[PATH_MAX + 16];
	long size0, size1;

	case_init(argc, argv);
	snprintf(copy, sizeof copy, "%s/exe-copy", argv[1]);
	if (argc < 3) {
		char buf[65536];
		int src = open("/proc/self/exe", O_RDONLY);
		int dst = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0755);
		if (src < 0 || dst < 0)
			case_fail("copy exe: %s", strerror(errno));
		for (ssize_t n; (n = read(src, buf, sizeof buf)) > 0;)
			if (write(dst, buf, n) != n)
				case_fail("write copy");
		close(src);
		close(dst);
		char *av[] = {copy, argv[1], "copy", NULL};
		execv(copy, av);
		case_fail("exec %s: %s", copy, strerror(errno));
	}
	if (unlink(copy) != 0)
		case_fail("unlink %s: %s", copy, strerror(errno));
	unsigned long sum0 = sum_exe(&size0);
	snprintf(want, sizeof want, "%s (deleted)", copy);

	case_ready();
	case_wait_go();

	ssize_t n = readlink("/proc/self/exe", link, sizeof link - 1);
	if (n <= 0)
		case_fail("readlink exe");
	link[n] = 0;
	if (strcmp(link, want))
		case_fail("exe is %s, want %s", link, want);
	if (sum_exe(&size1) != sum0 || size1 != size0)
		case_fail("exe contents differ (%ld bytes, were %ld)", size1, size0);
	if (access(copy, F_OK) == 0)
		case_fail("%s is back", copy);
	case_pass();
}

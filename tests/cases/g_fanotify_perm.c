/*
 * g_fanotify_perm.c - fd 42 is a fanotify group of class FAN_CLASS_CONTENT
 * with a permission mark (FAN_OPEN_PERM): the dump is refused, naming it,
 * and the mark still asks afterwards.
 */
#include "case.h"

#include <fcntl.h>
#include <sys/fanotify.h>

int main(int argc, char **argv)
{
	case_init(argc, argv);
	int fd = fanotify_init(FAN_CLASS_CONTENT | FAN_NONBLOCK, O_RDONLY);
	if (fd < 0 || dup2(fd, 42) != 42)
		case_fail("fanotify_init: %s", strerror(errno));
	close(fd);
	int w = open("marked", O_WRONLY | O_CREAT, 0644);
	if (w < 0 || fanotify_mark(42, FAN_MARK_ADD, FAN_OPEN_PERM, AT_FDCWD, "marked"))
		case_fail("fanotify_mark: %s", strerror(errno));
	close(w);
	case_ready();
	case_wait_go();
	char buf[256];
	if (read(42, buf, sizeof(buf)) != -1 || errno != EAGAIN)
		case_fail("an event is queued");
	if (!strstr((case_read_file("/proc/self/fdinfo/42", buf, sizeof(buf)), buf), "mask:10000"))
		case_fail("the permission mark is gone: %s", buf);
	case_pass();
}

/*
 * g_fanotify_queued.c - fd 42 is a fanotify group with an event queued
 * (a write to a marked file): the dump is refused, naming it, and the event
 * is still there afterwards.
 */
#include "case.h"

#include <fcntl.h>
#include <sys/fanotify.h>

int main(int argc, char **argv)
{
	case_init(argc, argv);
	int fd = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY);
	if (fd < 0 || dup2(fd, 42) != 42)
		case_fail("fanotify_init: %s", strerror(errno));
	close(fd);
	int w = open("marked", O_WRONLY | O_CREAT, 0644);
	if (w < 0 || fanotify_mark(42, FAN_MARK_ADD, FAN_MODIFY, AT_FDCWD, "marked"))
		case_fail("fanotify_mark: %s", strerror(errno));
	if (write(w, "x", 1) != 1)
		case_fail("write: %s", strerror(errno));
	case_ready();
	case_wait_go();
	char buf[4096] __attribute__((aligned(8)));
	ssize_t n = read(42, buf, sizeof(buf));
	struct fanotify_event_metadata *m = (void *)buf;
	if (n < (ssize_t)sizeof(*m) || m->mask != FAN_MODIFY || m->pid != getpid())
		case_fail("the queued event is gone: read %zd (%s)", n, strerror(errno));
	case_pass();
}

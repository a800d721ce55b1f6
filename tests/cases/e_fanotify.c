/*
 * e_fanotify.c - fanotify groups (see core/files/fanotify.go):
 *   fd 40: FAN_CLASS_NOTIF|FAN_CLOEXEC|FAN_NONBLOCK, events O_RDONLY, with
 *          an inode mark on fan/f (FAN_MODIFY|FAN_CLOSE_WRITE, an ignore
 *          mask FAN_OPEN surviving modify), one on the directory fan/d
 *          (FAN_MODIFY|FAN_EVENT_ON_CHILD|FAN_ONDIR), a mount mark and a
 *          file system mark on /proc (FAN_OPEN_EXEC: never fires there);
 *   fd 41: FAN_CLASS_NOTIF|FAN_REPORT_FID, blocking, events O_RDWR, with
 *          FAN_CREATE|FAN_ONDIR|FAN_EVENT_ON_CHILD on fan/d and a
 *          FAN_MARK_IGNORE mark on fan/f.
 * After the restores the fanotify lines of fdinfo and the file flags are
 * as before, and writing fan/f, a child of fan/d and creating a file in
 * fan/d give the expected events on the restored fds.
 */
#include "case.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/fanotify.h>
#include <sys/stat.h>

#ifndef FAN_MARK_IGNORE
#define FAN_MARK_IGNORE 0x00000400
#endif

static char before[2][4096];

/* fdinfo_lines returns the "flags:" and "fanotify" lines of fd's fdinfo. */
static void fdinfo_lines(int fd, char *out, size_t size)
{
	char path[64], buf[8192];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (case_read_file(path, buf, sizeof(buf)) < 0)
		case_fail("read %s: %s", path, strerror(errno));
	out[0] = 0;
	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
		if (!strncmp(l, "flags:", 6) || !strncmp(l, "fanotify", 8)) {
			strncat(out, l, size - strlen(out) - 2);
			strcat(out, "\n");
		}
}

static int init_group(int want, unsigned flags, unsigned evflags)
{
	int fd = fanotify_init(flags, evflags);
	if (fd < 0)
		case_fail("fanotify_init(%#x): %s", flags, strerror(errno));
	if (fd != want && (dup2(fd, want) != want || close(fd)))
		case_fail("dup2: %s", strerror(errno));
	if (flags & FAN_CLOEXEC)
		fcntl(want, F_SETFD, FD_CLOEXEC);
	return want;
}

static void mark(int fd, unsigned flags, unsigned long long mask, const char *path)
{
	if (fanotify_mark(fd, FAN_MARK_ADD | flags, mask, AT_FDCWD, path))
		case_fail("fanotify_mark(%#x, %#llx, %s): %s", flags, mask, path, strerror(errno));
}

/* expect reads one event from fd and checks its mask (and, with fd, that
 * its file is path opened with want flags). */
static void expect(int fd, unsigned long long mask, const char *path, int want)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (poll(&p, 1, 5000) != 1)
		case_fail("fd %d: no event (wanted mask %#llx)", fd, mask);
	char buf[4096] __attribute__((aligned(8)));
	ssize_t n = read(fd, buf, sizeof(buf));
	if (n < (ssize_t)sizeof(struct fanotify_event_metadata))
		case_fail("fd %d: read %zd: %s", fd, n, strerror(errno));
	struct fanotify_event_metadata *m = (void *)buf;
	if (m->vers != FANOTIFY_METADATA_VERSION || m->mask != mask || m->pid != getpid())
		case_fail("fd %d: event mask %#llx pid %d, wanted %#llx pid %d", fd,
			  (unsigned long long)m->mask, m->pid, mask, getpid());
	if (path) {
		char l[64], target[PATH_MAX] = "";
		snprintf(l, sizeof(l), "/proc/self/fd/%d", m->fd);
		readlink(l, target, sizeof(target) - 1);
		int fl = fcntl(m->fd, F_GETFL);
		if (strcmp(target, path) || (fl & O_ACCMODE) != want)
			case_fail("fd %d: event file %s flags %#o, wanted %s %#o", fd, target, fl, path, want);
		close(m->fd);
	} else if (m->fd != FAN_NOFD) {
		case_fail("fd %d: FID event with fd %d", fd, m->fd);
	}
	if (n != m->event_len)
		case_fail("fd %d: %zd bytes read, one event of %u wanted", fd, n, m->event_len);
}

static void write_file(const char *p)
{
	int w = open(p, O_WRONLY | O_CREAT, 0644);
	if (w < 0 || write(w, "x", 1) != 1 || close(w))
		case_fail("write %s: %s", p, strerror(errno));
}

int main(int argc, char **argv)
{
	case_init(argc, argv);
	if (mkdir("fan", 0755) || mkdir("fan/d", 0755))
		case_fail("mkdir: %s", strerror(errno));
	write_file("fan/f");
	write_file("fan/d/child");
	char f[PATH_MAX + 16], child[PATH_MAX + 16];
	snprintf(f, sizeof(f), "%s/fan/f", case_workdir);
	snprintf(child, sizeof(child), "%s/fan/d/child", case_workdir);

	int a = init_group(40, FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY);
	mark(a, 0, FAN_MODIFY | FAN_CLOSE_WRITE, "fan/f");
	mark(a, FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_OPEN, "fan/f");
	mark(a, 0, FAN_MODIFY | FAN_EVENT_ON_CHILD | FAN_ONDIR, "fan/d");
	mark(a, FAN_MARK_MOUNT, FAN_OPEN_EXEC, "/proc");
	mark(a, FAN_MARK_FILESYSTEM, FAN_OPEN_EXEC, "/proc");
	int b = init_group(41, FAN_CLASS_NOTIF | FAN_REPORT_FID, O_RDWR);
	mark(b, 0, FAN_CREATE | FAN_ONDIR | FAN_EVENT_ON_CHILD, "fan/d");
	mark(b, FAN_MARK_IGNORE, FAN_MODIFY, "fan/f");
	fdinfo_lines(a, before[0], sizeof(before[0]));
	fdinfo_lines(b, before[1], sizeof(before[1]));
	case_log("fd 40:\n%s", before[0]);
	case_log("fd 41:\n%s", before[1]);
	case_ready();
	case_wait_go();

	for (int i = 0; i < 2; i++) {
		char now[4096];
		fdinfo_lines(40 + i, now, sizeof(now));
		if (strcmp(now, before[i]))
			case_fail("fd %d fdinfo changed:\n%s\nwas:\n%s", 40 + i, now, before[i]);
	}
	if (fcntl(40, F_GETFD) != FD_CLOEXEC || fcntl(41, F_GETFD) != 0)
		case_fail("close-on-exec changed: %d %d", fcntl(40, F_GETFD), fcntl(41, F_GETFD));
	char buf[256];
	if (read(40, buf, sizeof(buf)) != -1 || errno != EAGAIN)
		case_fail("fd 40: event queued after restore or blocking: %s", strerror(errno));

	int w = open("fan/f", O_WRONLY);
	if (w < 0 || write(w, "y", 1) != 1)
		case_fail("write fan/f: %s", strerror(errno));
	expect(a, FAN_MODIFY, f, O_RDONLY);
	close(w);
	expect(a, FAN_CLOSE_WRITE, f, O_RDONLY);
	w = open("fan/d/child", O_WRONLY);
	if (w < 0 || write(w, "y", 1) != 1)
		case_fail("write fan/d/child: %s", strerror(errno));
	expect(a, FAN_MODIFY, child, O_RDONLY);
	close(w);
	if (read(40, buf, sizeof(buf)) != -1 || errno != EAGAIN)
		case_fail("fd 40: an event beyond the expected ones");
	write_file("fan/d/new");
	expect(b, FAN_CREATE, NULL, 0);
	case_pass();
}

/*
 * l_deadpidfd: pidfds of processes that exited and were reaped before the
 * dump (fdinfo "Pid: -1"): A of a child that exited with code 7, B (with
 * PIDFD_NONBLOCK) of a child killed by SIGTERM. After the restores, from
 * inside: both still say "Pid: -1", poll readable, pidfd_send_signal
 * fails with ESRCH, waitid(P_PIDFD) with ECHILD, PIDFD_GET_INFO reports
 * the same exit status, and B is still O_NONBLOCK.
 */
#include "case.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

struct info {
	uint64_t mask, cgroupid;
	uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
	int32_t exit_code;
};
#define GET_INFO _IOWR(0xFF, 11, struct info)
#define INFO_EXIT (1 << 3)

static int dead_pidfd(int how, unsigned flags)
{
	int fd, st;
	pid_t c = fork();

	if (c < 0)
		case_fail("fork: %s", strerror(errno));
	if (c == 0) {
		if (how)
			for (;;)
				pause();
		_exit(7);
	}
	fd = syscall(SYS_pidfd_open, c, flags);
	if (fd < 0)
		case_fail("pidfd_open: %s", strerror(errno));
	if (how)
		kill(c, SIGTERM);
	if (waitpid(c, &st, 0) != c)
		case_fail("waitpid: %s", strerror(errno));
	return fd;
}

static void check(int fd, const char *name, int status, int nonblock)
{
	char path[64], buf[1024];
	struct pollfd p = { .fd = fd, .events = POLLIN };
	struct info in = { .mask = INFO_EXIT };
	siginfo_t si;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (case_read_file(path, buf, sizeof(buf)) < 0 || !strstr(buf, "Pid:\t-1\n"))
		case_fail("%s: fdinfo does not say Pid: -1:\n%s", name, buf);
	if (poll(&p, 1, 0) != 1 || !(p.revents & POLLIN))
		case_fail("%s: poll: revents %#x", name, p.revents);
	if (syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0) == 0 || errno != ESRCH)
		case_fail("%s: pidfd_send_signal: %s, want ESRCH", name, strerror(errno));
	if (waitid(P_PIDFD, fd, &si, WEXITED | WNOHANG) == 0 || errno != ECHILD)
		case_fail("%s: waitid: %s, want ECHILD", name, strerror(errno));
	if (ioctl(fd, GET_INFO, &in))
		case_fail("%s: PIDFD_GET_INFO: %s", name, strerror(errno));
	if (!(in.mask & INFO_EXIT) || in.exit_code != status)
		case_fail("%s: exit info mask %#llx status %#x, want %#x", name,
			  (unsigned long long)in.mask, in.exit_code, status);
	if (!!(fcntl(fd, F_GETFL) & O_NONBLOCK) != nonblock)
		case_fail("%s: O_NONBLOCK %d, want %d", name, !nonblock, nonblock);
}

int main(int argc, char **argv)
{
	int a, b;

	case_init(argc, argv);
	a = dead_pidfd(0, 0);
	b = dead_pidfd(1, PIDFD_NONBLOCK);
	check(a, "A", 7 << 8, 0);
	check(b, "B", SIGTERM, 1);
	case_ready();
	case_wait_go();
	check(a, "A", 7 << 8, 0);
	check(b, "B", SIGTERM, 1);
	case_pass();
}

/*
 * g_fown: the owner and signal of open file descriptions (F_SETOWN_EX,
 * F_SETSIG) and the status flags O_ASYNC, O_NOATIME, O_DIRECT, O_SYNC,
 * O_DSYNC come back; an O_ASYNC pipe still sends its signal.
 *
 * Setup: WORKDIR/f.dat opened four times: A with O_NOATIME|O_SYNC, owner
 * this process, F_SETSIG SIGUSR1, O_ASYNC set with F_SETFL; B O_DIRECT
 * with owner a second thread (F_OWNER_TID); C O_DSYNC with owner the
 * process group of a child that leads its own group; D plain, no owner.
 * A pipe whose read end has O_ASYNC|O_NONBLOCK, owner this process,
 * F_SETSIG SIGUSR2 (SIGUSR2 blocked, taken with sigtimedwait).
 *
 * After "go": F_GETFL, F_GETOWN_EX (the same ids: pids are kept) and
 * F_GETSIG of each as before; a write into the pipe queues SIGUSR2 for
 * us with si_fd the read end.
 */
#define _GNU_SOURCE
#include "case.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

static volatile pid_t thread_tid;

static void *thread_main(void *arg)
{
	(void)arg;
	thread_tid = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

struct state {
	int fl, sig;
	struct f_owner_ex own;
};

static void get(int fd, struct state *s)
{
	s->fl = fcntl(fd, F_GETFL);
	s->sig = fcntl(fd, F_GETSIG);
	CHECK(s->fl >= 0 && s->sig >= 0, "fcntl %d: %s", fd, strerror(errno));
	CHECK(fcntl(fd, F_GETOWN_EX, &s->own) == 0, "F_GETOWN_EX %d", fd);
}

static void same(int fd, const char *name, const struct state *was)
{
	struct state now;
	get(fd, &now);
	CHECK(now.fl == was->fl, "%s: flags %o, were %o", name, now.fl, was->fl);
	CHECK(now.sig == was->sig, "%s: F_GETSIG %d, was %d", name, now.sig, was->sig);
	CHECK(now.own.type == was->own.type && now.own.pid == was->own.pid,
	      "%s: owner %d/%d, was %d/%d", name, now.own.type, now.own.pid,
	      was->own.type, was->own.pid);
}

static void own(int fd, int type, pid_t pid)
{
	struct f_owner_ex o = {.type = type, .pid = pid};
	CHECK(fcntl(fd, F_SETOWN_EX, &o) == 0, "F_SETOWN_EX %d: %s", fd,
	      strerror(errno));
}

int main(int argc, char **argv)
{
	struct state sa, sb, sc, sd, sp;
	pthread_t th;
	sigset_t usr2;

	case_init(argc, argv);
	sigemptyset(&usr2);
	sigaddset(&usr2, SIGUSR2);
	sigaddset(&usr2, SIGIO);
	CHECK(pthread_sigmask(SIG_BLOCK, &usr2, NULL) == 0, "block");
	signal(SIGUSR1, SIG_IGN);
	CHECK(pthread_create(&th, NULL, thread_main, NULL) == 0, "thread");
	while (!thread_tid)
		case_sleep_ms(1);
	int kid[2];
	CHECK(pipe(kid) == 0, "pipe");
	pid_t child = fork();
	CHECK(child >= 0, "fork");
	if (child == 0) {
		char c;
		setpgid(0, 0);
		close(kid[1]);
		read(kid[0], &c, 1);
		_exit(0);
	}
	close(kid[0]);
	CHECK(setpgid(child, child) == 0 || errno == EACCES, "setpgid");

	int a = open("f.dat", O_RDWR | O_CREAT | O_NOATIME | O_SYNC, 0600);
	CHECK(a >= 0, "open A: %s", strerror(errno));
	CHECK(write(a, "data", 4) == 4, "write");
	own(a, F_OWNER_PID, getpid());
	CHECK(fcntl(a, F_SETSIG, SIGUSR1) == 0, "F_SETSIG A");
	CHECK(fcntl(a, F_SETFL, fcntl(a, F_GETFL) | O_ASYNC) == 0, "O_ASYNC A");
	int b = open("f.dat", O_RDONLY | O_DIRECT);
	CHECK(b >= 0, "open B O_DIRECT: %s", strerror(errno));
	own(b, F_OWNER_TID, thread_tid);
	int c = open("f.dat", O_WRONLY | O_DSYNC | O_APPEND);
	CHECK(c >= 0, "open C");
	own(c, F_OWNER_PGRP, child);
	int d = open("f.dat", O_RDONLY);
	CHECK(d >= 0, "open D");
	int p[2];
	CHECK(pipe2(p, O_NONBLOCK) == 0, "pipe2");
	own(p[0], F_OWNER_PID, getpid());
	CHECK(fcntl(p[0], F_SETSIG, SIGUSR2) == 0, "F_SETSIG pipe");
	CHECK(fcntl(p[0], F_SETFL, O_NONBLOCK | O_ASYNC) == 0, "O_ASYNC pipe");
	get(a, &sa);
	get(b, &sb);
	get(c, &sc);
	get(d, &sd);
	get(p[0], &sp);
	case_log("A %o B %o C %o pipe %o", sa.fl, sb.fl, sc.fl, sp.fl);

	case_ready();
	case_wait_go();

	same(a, "A", &sa);
	same(b, "B", &sb);
	same(c, "C", &sc);
	same(d, "D", &sd);
	same(p[0], "pipe", &sp);
	CHECK(write(p[1], "x", 1) == 1, "write pipe");
	siginfo_t si;
	struct timespec ts = {2, 0};
	int s = sigtimedwait(&usr2, &si, &ts);
	CHECK(s == SIGUSR2, "no SIGUSR2 from the O_ASYNC pipe (got %d: %s)", s,
	      strerror(errno));
	CHECK(si.si_fd == p[0], "si_fd %d, want %d", si.si_fd, p[0]);
	write(kid[1], "x", 1);
	waitpid(child, NULL, 0);
	case_pass();
}

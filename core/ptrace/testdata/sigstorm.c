// sigstorm: a process that forks children which exit at once, without
// pause, with a SIGCHLD handler that reaps them and wakes the main loop
// through SIGURG, which is blocked and read from a signalfd in epoll_wait
// (as postgres's latch does), plus a thread of its own that sends itself
// SIGUSR1 (handled) and SIGURG constantly. Used to inject syscalls into a
// process while signals arrive. It checks on every turn that its signal
// mask is what it set and prints "ready" once running.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t reaped, usr1;

static void on_chld(int sig) {
	int e = errno;
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		reaped++;
	kill(getpid(), SIGURG);
	errno = e;
}

static void on_usr1(int sig) { (void)sig; usr1++; }

static void *pester(void *arg) {
	pid_t pid = getpid();
	(void)arg;
	for (;;) {
		syscall(SYS_tgkill, pid, pid, SIGUSR1);
		kill(pid, SIGURG);
		usleep(50);
	}
	return NULL;
}

int main(int argc, char **argv) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_chld;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGCHLD, &sa, NULL);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sigset_t urg;
	sigemptyset(&urg);
	sigaddset(&urg, SIGURG);
	sigprocmask(SIG_BLOCK, &urg, NULL);
	int sfd = signalfd(-1, &urg, SFD_NONBLOCK | SFD_CLOEXEC);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN};
	if (sfd < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) < 0) {
		perror("setup");
		return 1;
	}
	pthread_t th;
	if (argc > 1 && strcmp(argv[1], "thread") == 0)
		pthread_create(&th, NULL, pester, NULL);
	unsigned long long want = 0, now;
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, NULL, &want, 8);
	printf("ready\n");
	fflush(stdout);
	for (unsigned long n = 0;; n++) {
		pid_t c = fork();
		if (c == 0) {
			kill(getppid(), SIGUSR1);
			_exit(0);
		}
		struct epoll_event out;
		if (epoll_wait(ep, &out, 1, 1) > 0) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) == sizeof si)
				;
		}
		now = 0;
		syscall(SYS_rt_sigprocmask, SIG_SETMASK, NULL, &now, 8);
		if (now != want) {
			printf("FAIL: signal mask changed from %#llx to %#llx\n", want, now);
			fflush(stdout);
			return 1;
		}
	}
}

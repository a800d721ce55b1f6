/* crash_target.c - the workload of the TestCrash_* tests: ctr-cr is killed
 * at points of a dump of it, and it must run on unchanged.
 *
 * crash_target WORKDIR NTHREADS [PORT [catch]]
 *
 * Every thread has a signal mask of its own (the main thread blocks
 * SIGUSR2 and SIGRTMIN+3, thread k also signal 40+k%20), counts in a loop
 * and checks from inside, each round, that its mask is the one it set and
 * that a floating-point accumulator and the rounding mode (MXCSR) are
 * intact, the main thread and thread 1 also that a burst of arithmetic
 * kept in registers gives the same result each time, and a spinner thread
 * (with AVX2) that its general and vector registers keep their values
 * across raw syscalls; half the
 * threads sleep in clock_nanosleep between rounds, the others in a read of
 * a pipe that never gets data (restartable calls, interrupted by the
 * seize). With PORT, a listener on 127.0.0.1:PORT and a connection to
 * it carry an echo loop (an established TCP connection). The main thread
 * writes the total count and the echo count to WORKDIR/count every 10 ms;
 * with "catch", it has handlers for SIGURG, SIGWINCH and SIGCHLD (no
 * signal it ignores, as a Go program). It holds 4 MiB of private pages
 * (which the dump moves through pipes in it) and checks one a round, and
 * that the lowest free fd is the one it was at the start (a crash may
 * leave no fd among the program's numbers). Any failure is
 * printed as "FAIL: ..." and the program exits 1. */
#include "case.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fenv.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/socket.h>

#define MAXT 256

static atomic_ulong counts[MAXT + 2];
static atomic_int started; /* threads that have set their mask up */
static int idle_pipe[2];

static void fail(const char *what, int k)
{
	printf("FAIL: %s (thread %d)\n", what, k);
	fflush(stdout);
	_exit(1);
}

/* burst runs 200000 rounds of arithmetic in registers (about 0.3 ms): a
 * thread seized in it and resumed with any register or the rounding mode
 * changed gets another result. */
static __attribute__((noinline)) double burst(double x)
{
	for (int i = 0; i < 200000; i++)
		x = x * 1.0000001 + 0.25;
	return x;
}

static double burst_want;

static void check_fp(int k)
{
	if (fegetround() != FE_TOWARDZERO)
		fail("rounding mode changed", k);
	if (k <= 1 && burst(1.5) != burst_want)
		fail("register state changed in a burst", k);
}

static void own_mask(int k, sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGUSR2);
	sigaddset(set, SIGRTMIN + 3);
	if (k > 0)
		sigaddset(set, 40 + k % 20);
}

static void check_mask(int k, const sigset_t *want)
{
	sigset_t cur;
	pthread_sigmask(SIG_SETMASK, NULL, &cur);
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP && sigismember(&cur, s) != sigismember(want, s))
			fail("signal mask changed", k);
}

static void *worker(void *arg)
{
	int k = (int)(long)arg;
	sigset_t set;
	own_mask(k, &set);
	pthread_sigmask(SIG_SETMASK, &set, NULL);
	fesetround(FE_TOWARDZERO);
	atomic_fetch_add(&started, 1);
	double acc = 0.5;
	for (unsigned long n = 1;; n++) {
		acc += 1.0;
		if (acc != (double)n + 0.5)
			fail("floating-point state changed", k);
		check_mask(k, &set);
		check_fp(k);
		atomic_fetch_add(&counts[k], 1);
		if (k % 2) {
			struct timespec ts = {0, 2000000};
			clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
		} else {
			fd_set rd;
			FD_ZERO(&rd);
			FD_SET(idle_pipe[0], &rd);
			struct timeval tv = {0, 2000};
			int r = select(idle_pipe[0] + 1, &rd, NULL, NULL, &tv);
			if (r != 0 && !(r < 0 && errno == EINTR))
				fail("select on an idle pipe returned", k);
		}
	}
	return NULL;
}

static atomic_int caught;

static void on_signal(int sig)
{
	(void)sig;
	atomic_fetch_add(&caught, 1);
}

/* spinner keeps known values in rbx, rbp, r12-r15, xmm8-xmm15 and the
 * upper halves of ymm8-ymm15 across raw nanosleep syscalls (the kernel
 * keeps every register but rax, rcx, r11), checks them after each and
 * fails on any change: a thread resumed with another register state than
 * its own is caught. */
static const unsigned long long pattern[4] = {0x0123456789abcdefULL, 0xfedcba9876543210ULL, 0x1111222233334444ULL, 0x5555666677778888ULL};

static struct timespec spin_ts = {0, 1000000};

static void *spinner(void *arg)
{
	(void)arg;
	sigset_t set;
	own_mask(1000, &set);
	pthread_sigmask(SIG_SETMASK, &set, NULL);
	atomic_fetch_add(&started, 1);
	__asm__ volatile(
		"push %%rbp\n"
		"vmovdqu %[p], %%ymm8\n"
		"vmovdqa %%ymm8, %%ymm9\n vmovdqa %%ymm8, %%ymm10\n vmovdqa %%ymm8, %%ymm11\n"
		"vmovdqa %%ymm8, %%ymm12\n vmovdqa %%ymm8, %%ymm13\n vmovdqa %%ymm8, %%ymm14\n vmovdqa %%ymm8, %%ymm15\n"
		"mov $0x1234567812345678, %%rbx\n mov %%rbx, %%rbp\n mov %%rbx, %%r12\n mov %%rbx, %%r13\n"
		"mov %%rbx, %%r14\n mov %%rbx, %%r15\n"
		"1: mov $35, %%eax\n lea %[ts], %%rdi\n xor %%esi, %%esi\n syscall\n"
		"mov $0x1234567812345678, %%rax\n"
		"cmp %%rax, %%rbx\n jne 2f\n cmp %%rax, %%rbp\n jne 2f\n cmp %%rax, %%r12\n jne 2f\n"
		"cmp %%rax, %%r13\n jne 2f\n cmp %%rax, %%r14\n jne 2f\n cmp %%rax, %%r15\n jne 2f\n"
		"vmovdqu %[p], %%ymm0\n"
		"vpcmpeqq %%ymm0, %%ymm8, %%ymm1\n vpcmpeqq %%ymm0, %%ymm9, %%ymm2\n vpand %%ymm1, %%ymm2, %%ymm1\n"
		"vpcmpeqq %%ymm0, %%ymm10, %%ymm2\n vpand %%ymm1, %%ymm2, %%ymm1\n vpcmpeqq %%ymm0, %%ymm11, %%ymm2\n vpand %%ymm1, %%ymm2, %%ymm1\n"
		"vpcmpeqq %%ymm0, %%ymm12, %%ymm2\n vpand %%ymm1, %%ymm2, %%ymm1\n vpcmpeqq %%ymm0, %%ymm13, %%ymm2\n vpand %%ymm1, %%ymm2, %%ymm1\n"
		"vpcmpeqq %%ymm0, %%ymm14, %%ymm2\n vpand %%ymm1, %%ymm2, %%ymm1\n vpcmpeqq %%ymm0, %%ymm15, %%ymm2\n vpand %%ymm1, %%ymm2, %%ymm1\n"
		"vpmovmskb %%ymm1, %%eax\n cmp $-1, %%eax\n jne 2f\n"
		"lock incq %[cnt]\n"
		"jmp 1b\n"
		"2: pop %%rbp\n"
		: [cnt] "+m"(counts[MAXT])
		: [p] "m"(pattern), [ts] "m"(spin_ts)
		: "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
		  "xmm0", "xmm1", "xmm2", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
	fail("register state changed in the spinner", 1000);
	return NULL;
}

static int tcp_fd[2];

static void *echo(void *arg)
{
	(void)arg;
	atomic_fetch_add(&started, 1);
	char c;
	for (;;) {
		ssize_t n = read(tcp_fd[1], &c, 1);
		if (n != 1)
			fail("echo read", MAXT);
		if (write(tcp_fd[1], &c, 1) != 1)
			fail("echo write", MAXT);
	}
	return NULL;
}

static void *client(void *arg)
{
	(void)arg;
	atomic_fetch_add(&started, 1);
	for (unsigned char i = 0;; i++) {
		char c;
		if (write(tcp_fd[0], &i, 1) != 1 || read(tcp_fd[0], &c, 1) != 1)
			fail("client i/o", MAXT + 1);
		if ((unsigned char)c != i)
			fail("echo mismatch", MAXT + 1);
		atomic_fetch_add(&counts[MAXT + 1], 1);
		usleep(2000);
	}
	return NULL;
}

static void setup_tcp(int port)
{
	int l = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(l, (void *)&a, sizeof(a)) || listen(l, 4))
		fail("listen", 0);
	tcp_fd[0] = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(tcp_fd[0], (void *)&a, sizeof(a)))
		fail("connect", 0);
	tcp_fd[1] = accept(l, NULL, NULL);
	if (tcp_fd[1] < 0)
		fail("accept", 0);
	pthread_t t;
	pthread_create(&t, NULL, echo, NULL);
	pthread_create(&t, NULL, client, NULL);
}

/* Pages enough for the dump's splice mover (pipes in the task), each
 * holding its index: checked one a round. */
#define BIG_PAGES 1024
static unsigned long *big;

static void big_setup(void)
{
	big = mmap(NULL, BIG_PAGES * 4096UL, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (big == MAP_FAILED)
		fail("mmap", 0);
	for (unsigned long i = 0; i < BIG_PAGES * 512; i++)
		big[i] = i * 0x9e3779b97f4a7c15ULL;
}

static void big_check(unsigned long r)
{
	unsigned long i = (r % BIG_PAGES) * 512 + r % 512;
	if (big[i] != i * 0x9e3779b97f4a7c15ULL)
		fail("memory changed", 0);
}

/* The lowest free fd: a crash may leave nothing below the fds the
 * program has. */
static int lowest_free(void)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fail("open /dev/null", 0);
	close(fd);
	return fd;
}

int main(int argc, char **argv)
{
	case_init(argc, argv);
	int n = argc > 2 ? atoi(argv[2]) : 0;
	if (n > MAXT)
		n = MAXT;
	if (pipe(idle_pipe))
		fail("pipe", 0);
	sigset_t set;
	own_mask(0, &set);
	pthread_sigmask(SIG_SETMASK, &set, NULL);
	fesetround(FE_TOWARDZERO);
	burst_want = burst(1.5);
	for (int k = 1; k <= n; k++) {
		pthread_t t;
		if (pthread_create(&t, NULL, worker, (void *)(long)k))
			fail("pthread_create", k);
	}
	int want = n;
	if (__builtin_cpu_supports("avx2")) {
		pthread_t t;
		pthread_create(&t, NULL, spinner, NULL);
		want++;
	}
	if (argc > 3 && atoi(argv[3]) > 0) {
		setup_tcp(atoi(argv[3]));
		want += 2;
	}
	/* ready only once every thread runs with its own mask */
	while (atomic_load(&started) < want)
		usleep(1000);
	if (argc > 4 && strcmp(argv[4], "catch") == 0) {
		struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
		sigaction(SIGURG, &sa, NULL);
		sigaction(SIGWINCH, &sa, NULL);
		sigaction(SIGCHLD, &sa, NULL);
	}
	int out = open("count", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (out < 0)
		fail("open count", 0);
	big_setup();
	int free_fd = lowest_free();
	case_ready();
	double acc = 0.25;
	for (unsigned long r = 1;; r++) {
		acc += 2.0;
		if (acc != 2.0 * r + 0.25)
			fail("floating-point state changed", 0);
		check_mask(0, &set);
		check_fp(0);
		big_check(r);
		if (lowest_free() != free_fd)
			fail("the lowest free fd changed", 0);
		unsigned long sum = r;
		for (int k = 0; k < MAXT + 2; k++)
			sum += atomic_load(&counts[k]);
		char buf[64];
		int len = snprintf(buf, sizeof(buf), "%lu %lu\n", sum,
				   atomic_load(&counts[MAXT + 1]));
		if (pwrite(out, buf, len, 0) != len)
			fail("write count", 0);
		struct timespec ts = {0, 10000000};
		clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
	}
}

/*
 * a_seccomp.c - seccomp filters and no_new_privs survive dump/restore.
 *
 * State (before ready):
 *   - thread "pre" is created first: it has no filter and no NO_NEW_PRIVS;
 *   - the main thread then sets PR_SET_NO_NEW_PRIVS and installs two
 *     filters: (1) uname -> ERRNO(EPERM), getpriority -> ERRNO(ENOSYS);
 *     (2) sysinfo -> ERRNO(EDOM), getpgid(0x7fffeeee) -> ERRNO(EXDEV) (an
 *     argument check: getpgid(0) stays allowed);
 *   - thread "post" is created after and inherits both filters.
 * None of these syscalls is used by libc or by the harness protocol.
 *
 * Checks (after go), from inside each thread: main and post see the errnos
 * above (and getpgid(0), getpid work), pre sees every call succeed;
 * PR_GET_SECCOMP / PR_GET_NO_NEW_PRIVS per thread; /proc/self/task/T/status
 * Seccomp, Seccomp_filters and NoNewPrivs of every thread are unchanged
 * (2/2/1 for main and post, 0/0/0 for pre).
 */
#include "case.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>

#define MAGIC_PGID 0x7fffeeee

#define LD_NR BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))
#define LD_ARCH                                                                \
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch))
#define LD_ARG0_LO                                                             \
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]))
#define RET(v) BPF_STMT(BPF_RET | BPF_K, (v))
#define ERRNO(e) (SECCOMP_RET_ERRNO | ((e) & SECCOMP_RET_DATA))

static struct sock_filter filter1[] = {
	LD_ARCH,
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
	RET(SECCOMP_RET_ALLOW),
	LD_NR,
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_uname, 0, 1),
	RET(ERRNO(EPERM)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getpriority, 0, 1),
	RET(ERRNO(ENOSYS)),
	RET(SECCOMP_RET_ALLOW),
};

static struct sock_filter filter2[] = {
	LD_ARCH,
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
	RET(SECCOMP_RET_ALLOW),
	LD_NR,
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_sysinfo, 0, 1),
	RET(ERRNO(EDOM)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getpgid, 0, 3),
	LD_ARG0_LO,
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, MAGIC_PGID, 0, 1),
	RET(ERRNO(EXDEV)),
	RET(SECCOMP_RET_ALLOW),
};

static void install(struct sock_filter *f, unsigned short len)
{
	struct sock_fprog prog = { .len = len, .filter = f };

	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
		case_fail("seccomp(SET_MODE_FILTER): %s", strerror(errno));
}

/* Expected errno of each probe (0: the call succeeds). */
struct expect {
	int uname, getprio, sysinfo, magic_pgid;
};
static const struct expect filtered = { EPERM, ENOSYS, EDOM, EXDEV };
static const struct expect open = { 0, 0, 0, ESRCH };

static char errbuf[3][256];

/* probe runs the syscalls in the calling thread; returns 0 or writes a
 * message into err. */
static int probe(const char *who, const struct expect *want, char *err,
		 size_t size)
{
	struct utsname u;
	struct sysinfo si;
	long r;
	int e;

#define EXPECT(call, want_errno, name)                                         \
	do {                                                                   \
		errno = 0;                                                     \
		r = (call);                                                    \
		e = r == -1 ? errno : 0;                                       \
		if (e != (want_errno)) {                                       \
			snprintf(err, size, "%s: %s: errno %d (%s), want %d", \
				 who, name, e, strerror(e), want_errno);       \
			return -1;                                             \
		}                                                              \
	} while (0)

	EXPECT(uname(&u), want->uname, "uname");
	EXPECT(syscall(SYS_getpriority, PRIO_PROCESS, 0), want->getprio,
	       "getpriority");
	EXPECT(sysinfo(&si), want->sysinfo, "sysinfo");
	/* No such process group: ESRCH when the filter lets it through. */
	EXPECT(syscall(SYS_getpgid, MAGIC_PGID), want->magic_pgid,
	       "getpgid(magic)");
	EXPECT(syscall(SYS_getpgid, 0), 0, "getpgid(0)");
	EXPECT(syscall(SYS_getpid), 0, "getpid");
	if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) != (want == &filtered ? 2 : 0)) {
		snprintf(err, size, "%s: PR_GET_SECCOMP %d", who,
			 prctl(PR_GET_SECCOMP, 0, 0, 0, 0));
		return -1;
	}
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != (want == &filtered)) {
		snprintf(err, size, "%s: PR_GET_NO_NEW_PRIVS %d", who,
			 prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
		return -1;
	}
	return 0;
#undef EXPECT
}

/* Seccomp/Seccomp_filters/NoNewPrivs lines of a thread. */
static void sec_status(pid_t tid, char *out, size_t size)
{
	char path[64], buf[4096], *line;
	size_t len = 0;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
	if (case_read_file(path, buf, sizeof(buf)) < 0)
		case_fail("read %s: %s", path, strerror(errno));
	out[0] = 0;
	for (line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
		if (!strncmp(line, "Seccomp:", 8) ||
		    !strncmp(line, "Seccomp_filters:", 16) ||
		    !strncmp(line, "NoNewPrivs:", 11))
			len += snprintf(out + len, size - len, "%s; ", line);
}

static volatile int phase; /* 0 setup, 1 checked before ready, 2 go */
static pid_t tids[3];
static volatile int done[3];

struct targ {
	int idx;
	const char *name;
	const struct expect *want;
};

static void *thread_main(void *arg)
{
	struct targ *a = arg;
	int seen = 0;

	tids[a->idx] = (pid_t)syscall(SYS_gettid);
	for (;;) {
		int p = __atomic_load_n(&phase, __ATOMIC_SEQ_CST);

		if (p > seen) {
			if (probe(a->name, a->want, errbuf[a->idx],
				  sizeof(errbuf[0])))
				case_fail("%s", errbuf[a->idx]);
			seen = p;
			__atomic_store_n(&done[a->idx], p, __ATOMIC_SEQ_CST);
			if (p == 2)
				return NULL;
		}
		case_sleep_ms(5);
	}
}

static void wait_done(int idx, int p)
{
	long long deadline = case_now() + 10000000000LL;

	while (__atomic_load_n(&done[idx], __ATOMIC_SEQ_CST) < p) {
		if (case_now() > deadline)
			case_fail("thread %d did not check in", idx);
		case_sleep_ms(2);
	}
}

int main(int argc, char **argv)
{
	static struct targ pre = { 1, "pre", &open }, post = { 2, "post", &filtered };
	pthread_t th_pre, th_post;
	char st0[3][256], st1[256];
	int i;

	case_init(argc, argv);
	tids[0] = (pid_t)syscall(SYS_gettid);
	if (pthread_create(&th_pre, NULL, thread_main, &pre))
		case_fail("pthread_create pre");
	while (!tids[1])
		case_sleep_ms(1);

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		case_fail("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	install(filter1, sizeof(filter1) / sizeof(filter1[0]));
	install(filter2, sizeof(filter2) / sizeof(filter2[0]));
	if (pthread_create(&th_post, NULL, thread_main, &post))
		case_fail("pthread_create post");
	while (!tids[2])
		case_sleep_ms(1);

	/* Validate the setup itself before ready. */
	__atomic_store_n(&phase, 1, __ATOMIC_SEQ_CST);
	if (probe("main", &filtered, errbuf[0], sizeof(errbuf[0])))
		case_fail("before ready: %s", errbuf[0]);
	wait_done(1, 1);
	wait_done(2, 1);
	for (i = 0; i < 3; i++) {
		sec_status(tids[i], st0[i], sizeof(st0[i]));
		case_log("thread %d: %s", tids[i], st0[i]);
	}
	if (!strstr(st0[0], "Seccomp:\t2") || !strstr(st0[0], "Seccomp_filters:\t2") ||
	    !strstr(st0[0], "NoNewPrivs:\t1") || !strstr(st0[1], "Seccomp:\t0"))
		case_fail("unexpected seccomp status before ready");
	case_ready();
	case_wait_go();

	for (i = 0; i < 3; i++) {
		sec_status(tids[i], st1, sizeof(st1));
		if (strcmp(st0[i], st1))
			case_fail("thread %d: %s, was %s", tids[i], st1, st0[i]);
	}
	__atomic_store_n(&phase, 2, __ATOMIC_SEQ_CST);
	if (probe("main", &filtered, errbuf[0], sizeof(errbuf[0])))
		case_fail("%s", errbuf[0]);
	pthread_join(th_pre, NULL);
	pthread_join(th_post, NULL);
	case_pass();
}

/*
 * a_seccomp_strict: a thread in SECCOMP_MODE_STRICT, and a filter
 * installed without no_new_privs by a thread that then gave up root.
 *
 *   S     enters strict mode, then serves a pipe: reads a number, writes it
 *         back plus one; on 0 it calls getpid, which strict mode punishes
 *         by killing S (only S: the rest of the process goes on).
 *   main  installs a filter (uname -> EPERM) with CAP_SYS_ADMIN and without
 *         no_new_privs, then drops to uid/gid 1000 (raw setresuid: main
 *         only, S must not run glibc's setxid handler) losing every
 *         capability.
 *
 * After the restores, from inside: S answers, /proc/self/task/S/status
 * shows Seccomp 1; main's uname fails with EPERM, Seccomp 2, NoNewPrivs 0,
 * uid 1000; sending 0 makes S disappear while main runs on.
 */
#include "case.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

static int to_s[2], from_s[2];
static volatile pid_t s_tid;

static void *strict_main(void *arg)
{
	long v;

	(void)arg;
	s_tid = syscall(SYS_gettid);
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0)
		s_tid = -1;
	for (;;) {
		if (syscall(SYS_read, to_s[0], &v, sizeof(v)) != sizeof(v))
			continue;
		if (v == 0)
			syscall(SYS_getpid); /* strict mode: S is killed */
		v++;
		syscall(SYS_write, from_s[1], &v, sizeof(v));
	}
	return NULL;
}

static long status_field(pid_t tid, const char *key)
{
	char path[64], buf[4096], *p;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
	if (case_read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	p = strstr(buf, key);
	return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

static void echo(long v, const char *when)
{
	long got = 0;

	CHECK(write(to_s[1], &v, sizeof(v)) == sizeof(v), "%s: write", when);
	CHECK(read(from_s[0], &got, sizeof(got)) == sizeof(got) && got == v + 1,
	      "%s: S answered %ld to %ld", when, got, v);
}

static void check_main(const char *when)
{
	struct utsname u;
	pid_t me = syscall(SYS_gettid);

	errno = 0;
	CHECK(uname(&u) == -1 && errno == EPERM, "%s: uname: %s", when,
	      strerror(errno));
	CHECK(status_field(me, "\nSeccomp:") == 2, "%s: main Seccomp %ld", when,
	      status_field(me, "\nSeccomp:"));
	CHECK(status_field(me, "\nNoNewPrivs:") == 0, "%s: main NoNewPrivs %ld",
	      when, status_field(me, "\nNoNewPrivs:"));
	CHECK(getuid() == 1000 && geteuid() == 1000, "%s: uid %d", when,
	      (int)geteuid());
	CHECK(status_field(s_tid, "\nSeccomp:") == 1, "%s: S Seccomp %ld", when,
	      status_field(s_tid, "\nSeccomp:"));
	echo(41, when);
}

int main(int argc, char **argv)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_uname, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { 4, f };
	pthread_t th;
	int i;

	case_init(argc, argv);
	CHECK(pipe(to_s) == 0 && pipe(from_s) == 0, "pipe");
	CHECK(pthread_create(&th, NULL, strict_main, NULL) == 0, "pthread");
	while (!s_tid)
		case_sleep_ms(1);
	CHECK(s_tid > 0, "S could not enter strict mode");
	CHECK(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0,
	      "filter: %s", strerror(errno));
	CHECK(syscall(SYS_setresgid, 1000, 1000, 1000) == 0 &&
		      syscall(SYS_setresuid, 1000, 1000, 1000) == 0,
	      "setresuid: %s", strerror(errno));
	check_main("before");
	case_ready();

	case_wait_go();
	check_main("after restore");
	echo(0 - 1, "after restore (-1)");
	i = 0;
	{
		long zero = 0;
		CHECK(write(to_s[1], &zero, sizeof(zero)) == sizeof(zero),
		      "write 0");
	}
	while (status_field(s_tid, "\nSeccomp:") != -1) {
		CHECK(++i < 2000, "S still there after its forbidden getpid");
		case_sleep_ms(1);
	}
	case_pass();
}

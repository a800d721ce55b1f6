/*
 * a_mlock: memory locks survive C/R after the process gave up root.
 *
 * As root, with a second thread running:
 *   A  64 KiB mlock()ed (VM_LOCKED, populated)
 *   B  64 KiB mlock2(MLOCK_ONFAULT)ed, one page touched
 *   mlockall(MCL_FUTURE | MCL_ONFAULT)  (or MCL_FUTURE only, -DNO_ONFAULT)
 *   C  16 KiB mapped afterwards: locked on fault by the mm's default flags
 * then RLIMIT_MEMLOCK = LIMIT_KB (default 1 MiB, above the locked total)
 * and setresuid/setresgid(1000).
 *
 * Recorded before ready and checked after the restores from inside:
 * VmLck of /proc/self/status, the smaps VmFlags lock bits ("lo", "lf") of
 * A, B and C, and the lock bits of a fresh one-page mmap, which show the
 * mm's MCL_FUTURE/MCL_ONFAULT state. Built with -DLIMIT_KB=96 (below the
 * locked total: no new mapping can be made, not even the dumper's) it is
 * the target of a refusal test.
 */
#include "case.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#ifndef LIMIT_KB
#define LIMIT_KB 1024
#endif

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

struct state {
	long vmlck;
	char fa[8], fb[8], fc[8];
	char fresh[16]; /* "EAGAIN" or lock bits of a fresh mapping */
};

static char *A, *B, *C;

/* lockbits writes "lo", "lo lf" or "-" for the VMA holding p. */
static void lockbits(void *p, char *out, size_t n)
{
	static char buf[1 << 20];
	unsigned long a = (unsigned long)p, lo_a, hi_a;
	char *s = buf, *e;
	int lo, lf;

	CHECK(case_read_file("/proc/self/smaps", buf, sizeof(buf)) > 0,
	      "smaps: %s", strerror(errno));
	for (;;) {
		CHECK(*s, "no VMA holds %p in smaps", p);
		if (sscanf(s, "%lx-%lx ", &lo_a, &hi_a) == 2 && lo_a <= a &&
		    a < hi_a)
			break;
		s = strchr(s, '\n');
		CHECK(s, "no VMA holds %p in smaps", p);
		s++;
	}
	s = strstr(s, "\nVmFlags:");
	CHECK(s, "no VmFlags for %p", p);
	e = strchr(s + 1, '\n');
	if (e)
		*e = 0;
	lo = strstr(s, " lo") != NULL;
	lf = strstr(s, " lf") != NULL;
	snprintf(out, n, "%s", lo ? (lf ? "lo lf" : "lo") : (lf ? "lf" : "-"));
}

static long vmlck(void)
{
	char buf[4096], *p;

	CHECK(case_read_file("/proc/self/status", buf, sizeof(buf)) > 0,
	      "status");
	p = strstr(buf, "VmLck:");
	CHECK(p, "no VmLck");
	return strtol(p + 6, NULL, 10);
}

static void snapshot(struct state *s)
{
	void *f;

	lockbits(A, s->fa, sizeof(s->fa));
	lockbits(B, s->fb, sizeof(s->fb));
	lockbits(C, s->fc, sizeof(s->fc));
	s->vmlck = vmlck();
	f = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (f == MAP_FAILED) {
		snprintf(s->fresh, sizeof(s->fresh), "%s",
			 errno == EAGAIN ? "EAGAIN" : "error");
		return;
	}
	lockbits(f, s->fresh, sizeof(s->fresh));
	munmap(f, 4096);
}

static void *idle(void *arg)
{
	(void)arg;
	for (;;)
		case_sleep_ms(10);
	return NULL;
}

int main(int argc, char **argv)
{
	struct rlimit rl = { LIMIT_KB * 1024, LIMIT_KB * 1024 };
	struct state before, after;
	pthread_t th;
	int fl = MCL_FUTURE;

	case_init(argc, argv);
#ifndef NO_ONFAULT
	fl |= MCL_ONFAULT;
#endif
	CHECK(pthread_create(&th, NULL, idle, NULL) == 0, "pthread_create");
	A = mmap(NULL, 64 << 10, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	B = mmap(NULL, 64 << 10, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(A != MAP_FAILED && B != MAP_FAILED, "mmap");
	memset(A, 0x5a, 64 << 10);
	CHECK(mlock(A, 64 << 10) == 0, "mlock: %s", strerror(errno));
	CHECK(syscall(SYS_mlock2, B, 64 << 10, MLOCK_ONFAULT) == 0,
	      "mlock2: %s", strerror(errno));
	B[0] = 1;
	CHECK(mlockall(fl) == 0, "mlockall: %s", strerror(errno));
	C = mmap(NULL, 16 << 10, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(C != MAP_FAILED, "mmap C");
	C[0] = 2;
	CHECK(setrlimit(RLIMIT_MEMLOCK, &rl) == 0, "setrlimit: %s",
	      strerror(errno));
	CHECK(setresgid(1000, 1000, 1000) == 0 && setresuid(1000, 1000, 1000) == 0,
	      "setresuid: %s", strerror(errno));
	snapshot(&before);
	case_log("VmLck %ld kB, A %s, B %s, C %s, fresh mapping: %s",
		 before.vmlck, before.fa, before.fb, before.fc, before.fresh);
	CHECK(strcmp(before.fa, "lo") == 0 && strncmp(before.fb, "lo lf", 5) == 0,
	      "setup: A %s B %s", before.fa, before.fb);
	case_ready();

	case_wait_go();
	snapshot(&after);
	CHECK(after.vmlck == before.vmlck, "VmLck %ld kB, want %ld", after.vmlck,
	      before.vmlck);
	CHECK(!strcmp(after.fa, before.fa), "A: %s, want %s", after.fa, before.fa);
	CHECK(!strcmp(after.fb, before.fb), "B: %s, want %s", after.fb, before.fb);
	CHECK(!strcmp(after.fc, before.fc), "C: %s, want %s", after.fc, before.fc);
	CHECK(!strcmp(after.fresh, before.fresh),
	      "a fresh mapping: %s, want %s", after.fresh, before.fresh);
	CHECK(A[100] == 0x5a && B[0] == 1 && C[0] == 2, "contents");
	CHECK(getuid() == 1000 && geteuid() == 1000, "uid");
	case_pass();
}

/*
 * m_cowfork.c - copy-on-write sharing between a parent and its forked
 * children. The parent maps 256 MiB of private anonymous memory, fills it,
 * and forks 4 children; each child writes a few pages of its own, and the
 * parent writes 4 MiB after the forks (the children keep sharing the old
 * pages among themselves). Built with -DCOW_NESTED, the first child
 * forks a grandchild that writes pages of its own too. After go, every
 * process checks from inside the contents of the whole region (its own
 * pages, the shared ones, the parent's later write that only the parent
 * sees) and, from /proc/self/smaps, that the region is still shared: its
 * private pages are its own written pages, not the whole region (a restore
 * that gives each process its own copy makes every page private). The
 * second child has a second thread. Two adjacent 2 MiB VMAs that the
 * kernel keeps apart (one moved there with mremap) are shared too, and
 * stay two VMAs. The region's address is written to WORKDIR/region for
 * the test to compare frame numbers from outside.
 */
#include "case.h"
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define REGION (256UL << 20)
#define PAGE 4096UL
#define NPAGES (REGION / PAGE)
#define NCHILD 4
#define OWN 3               /* pages each child writes */
#define LATE_FIRST 4096     /* pages the parent writes after the forks: */
#define LATE_PAGES 1024     /* 4 MiB the children share among themselves */
#define MAX_PRIVATE_KB 1024 /* a child's own pages are 12 kB */

static unsigned char *region;
static unsigned char *pair; /* two VMAs of PAIR bytes, one after the other */
#define PAIR (2UL << 20)

/* base is what page i holds as the parent filled it. */
static uint64_t base(uint64_t i) { return i * 0x9e3779b97f4a7c15ULL + 1; }

/* own_page is the j-th page written by writer w (1..NCHILD: children,
 * NCHILD+1: the grandchild). */
static uint64_t own_page(int w, int j) { return 1000UL * w + 17 * j + 3; }

static void fill_page(uint64_t i, uint64_t v)
{
	uint64_t *p = (uint64_t *)(region + i * PAGE);
	for (size_t k = 0; k < PAGE / 8; k++)
		p[k] = v + k;
}

/* check_region verifies every page against the writers whose pages this
 * process sees (writers[w] set) and the parent's late write (late). */
static int check_region(const int *writers, int late, const char *who)
{
	for (uint64_t i = 0; i < NPAGES; i++) {
		uint64_t want = base(i);
		for (int w = 1; w <= NCHILD + 1; w++)
			for (int j = 0; j < OWN; j++)
				if (writers[w] && own_page(w, j) == i)
					want = ~base(i) ^ (uint64_t)w;
		if (late && i >= LATE_FIRST && i < LATE_FIRST + LATE_PAGES)
			want = 0x5a5a5a5a ^ i;
		const uint64_t *p = (const uint64_t *)(region + i * PAGE);
		for (size_t k = 0; k < PAGE / 8; k += 97)
			if (p[k] != want + k) {
				printf("FAIL: %s: page %lu word %zu: %#lx, want %#lx\n", who,
				       (unsigned long)i, k, (unsigned long)p[k], (unsigned long)(want + k));
				fflush(stdout);
				return -1;
			}
	}
	return 0;
}

/* vma_private_kb returns Private_Clean + Private_Dirty (kB) of the VMA
 * [start, start+size) from /proc/self/smaps (-1 if there is no such VMA),
 * and its Shared_* in *shared. */
static long vma_private_kb(const unsigned char *start, unsigned long size, long *shared)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int in = 0;
	long priv = -1, kb;
	unsigned long s, e;
	*shared = 0;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = s == (unsigned long)start && e == (unsigned long)start + size;
			if (in)
				priv = 0;
			continue;
		}
		if (!in)
			continue;
		if (sscanf(line, "Private_Clean: %ld kB", &kb) == 1 || sscanf(line, "Private_Dirty: %ld kB", &kb) == 1)
			priv += kb;
		if (sscanf(line, "Shared_Clean: %ld kB", &kb) == 1 || sscanf(line, "Shared_Dirty: %ld kB", &kb) == 1)
			*shared += kb;
	}
	fclose(f);
	return priv;
}

/* check_shared fails unless the region is shared with others but for up
 * to max_kb. */
static int check_shared(const char *who, long max_kb)
{
	long shared, priv = vma_private_kb(region, REGION, &shared);
	if (priv < 0 || priv > max_kb || shared < (long)(REGION >> 10) / 2) {
		printf("FAIL: %s: region private %ld kB, shared %ld kB: the copy-on-write sharing is lost\n", who, priv, shared);
		fflush(stdout);
		return -1;
	}
	case_log("%s: region private %ld kB, shared %ld kB", who, priv, shared);
	for (int h = 0; h < 2; h++) {
		long psh, ppriv = vma_private_kb(pair + h * PAIR, PAIR, &psh);
		if (ppriv != 0 || psh != (long)(PAIR >> 10)) {
			printf("FAIL: %s: VMA %d of the pair: private %ld kB, shared %ld kB (-1: not a VMA of its own)\n", who, h, ppriv, psh);
			fflush(stdout);
			return -1;
		}
		for (unsigned long k = 0; k < PAIR; k += PAGE)
			if (pair[h * PAIR + k] != (unsigned char)(h * 7 + k / PAGE)) {
				printf("FAIL: %s: pair %d byte %lu\n", who, h, k);
				fflush(stdout);
				return -1;
			}
	}
	return 0;
}

/* guarded_map maps size bytes of private anonymous memory between two
 * PROT_NONE guard pages: a VMA of its own that no later mapping placed
 * next to it can merge with (the checks find it by its exact bounds). */
static unsigned char *guarded_map(unsigned long size)
{
	unsigned char *p = mmap(NULL, size + 2 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		case_fail("mmap: %s", strerror(errno));
	if (mprotect(p + PAGE, size, PROT_READ | PROT_WRITE) != 0)
		case_fail("mprotect: %s", strerror(errno));
	return p + PAGE;
}

/* make_pair maps two adjacent VMAs the kernel cannot merge: the second is
 * faulted in elsewhere, then moved next to the first. */
static void make_pair(void)
{
	pair = guarded_map(2 * PAIR);
	unsigned char *b = mmap(NULL, PAIR, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (b == MAP_FAILED)
		case_fail("mmap pair: %s", strerror(errno));
	memset(b, 1, PAIR);
	if (mremap(b, PAIR, PAIR, MREMAP_MAYMOVE | MREMAP_FIXED, pair + PAIR) == MAP_FAILED)
		case_fail("mremap: %s", strerror(errno));
	for (int h = 0; h < 2; h++)
		for (unsigned long k = 0; k < PAIR; k += PAGE)
			memset(pair + h * PAIR + k, h * 7 + k / PAGE, PAGE);
}

/* idle is a thread that only sleeps (the second child's). */
static void *idle(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

/* checked counts the processes done checking (a MAP_SHARED page): none
 * exits before all have checked, since a page shared only among children
 * becomes private to the last one left. */
static volatile int *checked;
static int nprocs;

static void checked_wait(void)
{
	__atomic_add_fetch(checked, 1, __ATOMIC_SEQ_CST);
	for (int i = 0; i < 3000 && __atomic_load_n(checked, __ATOMIC_SEQ_CST) < nprocs; i++)
		usleep(10000);
}

/* child waits for go, then checks its view and its sharing. */
static void child_wait_check(const int *writers, const char *who)
{
	while (!case_go_requested())
		usleep(10000);
	if (check_region(writers, 0, who) || check_shared(who, MAX_PRIVATE_KB))
		_exit(1);
	checked_wait();
	_exit(0);
}

static void write_own(int w)
{
	for (int j = 0; j < OWN; j++)
		fill_page(own_page(w, j), ~base(own_page(w, j)) ^ (uint64_t)w);
}

/* reap waits for pid and fails unless it exited 0. */
static void reap(pid_t pid, const char *who)
{
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		case_fail("%s %d: status %#x", who, pid, st);
}

int main(int argc, char **argv)
{
	case_init(argc, argv);
#ifdef COW_NESTED
	int nested = 1;
#else
	int nested = 0;
#endif
	region = guarded_map(REGION);
	for (uint64_t i = 0; i < NPAGES; i++)
		fill_page(i, base(i));
	make_pair();
	checked = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (checked == MAP_FAILED)
		case_fail("mmap shared: %s", strerror(errno));
	nprocs = 1 + NCHILD + nested;
	long psh;
	if (vma_private_kb(pair, PAIR, &psh) < 0 || vma_private_kb(pair + PAIR, PAIR, &psh) < 0)
		case_fail("the pair is one VMA");
	pid_t kids[NCHILD];
	for (int c = 0; c < NCHILD; c++) {
		kids[c] = fork();
		if (kids[c] < 0)
			case_fail("fork: %s", strerror(errno));
		if (kids[c] > 0)
			continue;
		int writers[NCHILD + 2] = { 0 };
		writers[c + 1] = 1;
		write_own(c + 1);
		if (c == 0 && nested) {
			pid_t g = fork();
			if (g < 0)
				_exit(3);
			if (g == 0) {
				writers[NCHILD + 1] = 1;
				write_own(NCHILD + 1);
				child_wait_check(writers, "grandchild");
			}
			while (!case_go_requested())
				usleep(10000);
			int st;
			if (check_region(writers, 0, "child 1") || check_shared("child 1", MAX_PRIVATE_KB))
				_exit(1);
			checked_wait();
			if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
				printf("FAIL: grandchild %d: status %#x\n", g, st);
				fflush(stdout);
				_exit(1);
			}
			_exit(0);
		}
		char who[32];
		snprintf(who, sizeof(who), "child %d", c + 1);
		pthread_t th;
		if (c == 1 && pthread_create(&th, NULL, idle, NULL) != 0)
			_exit(4);
		child_wait_check(writers, who);
	}
	for (uint64_t i = LATE_FIRST; i < LATE_FIRST + LATE_PAGES; i++)
		fill_page(i, 0x5a5a5a5a ^ i);
	int none[NCHILD + 2] = { 0 };
	if (check_shared("parent before the dump", LATE_PAGES * 4 + MAX_PRIVATE_KB))
		case_fail("no sharing to start with");
	FILE *f = fopen("region", "w");
	if (!f || fprintf(f, "%lx\n", (unsigned long)region) < 0 || fclose(f) != 0)
		case_fail("write region: %s", strerror(errno));
	case_ready();
	case_wait_go();
	if (check_region(none, 1, "parent") || check_shared("parent", LATE_PAGES * 4 + MAX_PRIVATE_KB))
		case_fail("parent");
	__atomic_add_fetch(checked, 1, __ATOMIC_SEQ_CST);
	for (int c = 0; c < NCHILD; c++)
		reap(kids[c], "child");
	case_pass();
}

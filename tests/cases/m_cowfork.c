/*
 * m_cowfork.c - copy-on-write sharing between a parent and its forked
 * children. The parent maps 256 MiB of private anonymous memory, fills it,
 * and forks 4 children; each child writes a few pages of its own, and the
 * parent writes one after the forks. Built with -DCOW_NESTED, the first child
 * forks a grandchild that writes pages of its own too. After go, every
 * process checks from inside the contents of the whole region (its own
 * pages, the shared ones, the parent's later write that only the parent
 * sees) and, from /proc/self/smaps, that the region is still shared: its
 * private pages are its own written pages, not the whole region (a restore
 * that gives each process its own copy makes every page private). The
 * second child has a second thread. The region's address is written to
 * WORKDIR/region for the test to compare frame numbers from outside.
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
#define PARENT_PAGE 7       /* page the parent writes after the forks */
#define MAX_PRIVATE_KB 8192 /* far below the region's 262144 kB */

static unsigned char *region;

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
		if (late && i == PARENT_PAGE)
			want = 0x5a5a5a5a;
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

/* region_private_kb returns Private_Clean + Private_Dirty (kB) of the
 * region from /proc/self/smaps, and its Shared_* in *shared. */
static long region_private_kb(long *shared)
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
			in = s == (unsigned long)region && e == (unsigned long)region + REGION;
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

/* check_shared fails unless the region is mostly shared with others. */
static int check_shared(const char *who)
{
	long shared, priv = region_private_kb(&shared);
	if (priv < 0 || priv > MAX_PRIVATE_KB || shared < (long)(REGION >> 10) / 2) {
		printf("FAIL: %s: region private %ld kB, shared %ld kB: the copy-on-write sharing is lost\n", who, priv, shared);
		fflush(stdout);
		return -1;
	}
	case_log("%s: region private %ld kB, shared %ld kB", who, priv, shared);
	return 0;
}

/* idle is a thread that only sleeps (the second child's). */
static void *idle(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

/* child waits for go, then checks its view and its sharing. */
static void child_wait_check(const int *writers, const char *who)
{
	while (!case_go_requested())
		usleep(10000);
	if (check_region(writers, 0, who) || check_shared(who))
		_exit(1);
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
	region = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		case_fail("mmap: %s", strerror(errno));
	for (uint64_t i = 0; i < NPAGES; i++)
		fill_page(i, base(i));
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
			if (check_region(writers, 0, "child 1") || check_shared("child 1"))
				_exit(1);
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
	fill_page(PARENT_PAGE, 0x5a5a5a5a);
	int none[NCHILD + 2] = { 0 };
	if (check_shared("parent before the dump"))
		case_fail("no sharing to start with");
	FILE *f = fopen("region", "w");
	if (!f || fprintf(f, "%lx\n", (unsigned long)region) < 0 || fclose(f) != 0)
		case_fail("write region: %s", strerror(errno));
	case_ready();
	case_wait_go();
	if (check_region(none, 1, "parent") || check_shared("parent"))
		case_fail("parent");
	for (int c = 0; c < NCHILD; c++)
		reap(kids[c], "child");
	case_pass();
}

/*
 * p_premig.c - memory that changes between pre-copy rounds (issue 16).
 *
 * After "ready" the case waits for WORKDIR/step1, step2, ... (created by
 * the test between pre-dump rounds) and changes its memory in every way
 * dirty tracking must see, printing "step N done" after each:
 *   - writes 5% of the pages of a 32 MiB region (a new generation each);
 *   - MADV_DONTNEED of other pages (they must read zero afterwards);
 *   - munmap + mmap of a new region at the same address, new contents;
 *   - two 2 MiB-aligned regions swapped with mremap (same layout, contents
 *     moved with whole page tables), a region moved elsewhere, two thirds
 *     of a mapping swapped (the kernel merges the moved parts into the
 *     rest and drops its tracking) before its first third is written;
 *   - a forked child writing its copy-on-write pages (the parent's must
 *     not change) while the parent writes too;
 *   - mprotect read-only and back, then a write;
 *   - its own userfaultfd on a fresh mapping (UFFDIO_COPY, ZEROPAGE), and
 *     its own async write-protect userfaultfd on U, registered before the
 *     first round and held until step 2;
 *   - a copied-on-write page of a private file mapping dropped (it reads
 *     the file again) and another written;
 *   - a new mapping per step.
 * On go it checks every page against what it wrote, from inside.
 */
#include "case.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15) /* Linux 6.7; older uapi headers lack it */
#endif

#define PG 4096UL
#define A_PAGES 8192 /* 32 MiB */
#define B_PAGES 256
#define C_PAGES 512
#define E_PAGES 16
#define G_PAGES 4
#define N_PAGES 64
#define MAXSTEP 16

static uint64_t *A, *B, *C1, *C2, *E, *G, *M, *H;
static int hgen[64], hmid, htop;
static uint64_t *U, *F;
static int fgen[16]; /* 0: the file's contents */
static int ugen, uffd_held = -1;
static int gen[A_PAGES]; /* -1: zero (MADV_DONTNEED) */
static int bgen, c1tag = 1, c2tag = 2, egen, ggen;
static uint64_t *news[MAXSTEP + 1];
static int moved_steps;

static uint64_t word(uint64_t tag, uint64_t page, uint64_t j)
{
	return (tag * 0x9e3779b97f4a7c15ULL) ^ (page << 20) ^ j ^ 0x5a5a5a5a00000000ULL;
}

static void fill(uint64_t *p, uint64_t tag, uint64_t page)
{
	for (uint64_t j = 0; j < PG / 8; j++)
		p[j] = word(tag, page, j);
}

static int check(const uint64_t *p, uint64_t tag, uint64_t page)
{
	for (uint64_t j = 0; j < PG / 8; j++)
		if (p[j] != word(tag, page, j))
			return 0;
	return 1;
}

static int zero(const uint64_t *p)
{
	for (uint64_t j = 0; j < PG / 8; j++)
		if (p[j])
			return 0;
	return 1;
}

/* map maps pages between two PROT_NONE pages: no other mapping is ever
 * next to it, so none merges with it (the kernel drops the tracking of a
 * tracked mapping that an mremap'd one merges into, which then costs a
 * full copy of it in the next round: correct, but the test also checks
 * that the rounds copy little). */
static void *map(size_t pages)
{
	char *p = mmap(NULL, (pages + 2) * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		case_fail("mmap: %s", strerror(errno));
	if (mprotect(p, PG, PROT_NONE) || mprotect(p + (pages + 1) * PG, PG, PROT_NONE))
		case_fail("mprotect: %s", strerror(errno));
	return p + PG;
}

/* map_aligned is map at a 2 MiB boundary: mremap then moves whole page
 * tables, keeping the page-table entries' bits as they were. */
#define HUGE (2UL << 20)
static void *aligned_hole(size_t len, int prot)
{
	char *p = mmap(NULL, len + 2 * HUGE, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		case_fail("mmap: %s", strerror(errno));
	char *a = (char *)(((uintptr_t)p + HUGE) & ~(HUGE - 1));
	munmap(p, a - PG - p);
	munmap(a + len + PG, p + len + 2 * HUGE - (a + len + PG));
	return a;
}

static void *map_aligned(size_t pages)
{
	char *a = aligned_hole(pages * PG, PROT_READ | PROT_WRITE);
	if (mprotect(a - PG, PG, PROT_NONE) || mprotect(a + pages * PG, PG, PROT_NONE))
		case_fail("mprotect: %s", strerror(errno));
	return a;
}

static uint64_t *pg(uint64_t *base, size_t i) { return base + i * (PG / 8); }

static void own_userfaultfd(int k)
{
	int uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
	if (uffd < 0)
		case_fail("step %d: userfaultfd: %s", k, strerror(errno));
	struct uffdio_api api = {.api = UFFD_API};
	if (ioctl(uffd, UFFDIO_API, &api))
		case_fail("step %d: UFFDIO_API: %s", k, strerror(errno));
	void *g = mmap(NULL, G_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct uffdio_register reg = {.range = {(uintptr_t)g, G_PAGES * PG}, .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg))
		case_fail("step %d: UFFDIO_REGISTER on its own mapping: %s", k, strerror(errno));
	static uint64_t src[PG / 8] __attribute__((aligned(4096)));
	ggen = 100 + k;
	for (int i = 0; i < G_PAGES - 1; i++) {
		fill(src, ggen, i);
		struct uffdio_copy cp = {.dst = (uintptr_t)g + i * PG, .src = (uintptr_t)src, .len = PG};
		if (ioctl(uffd, UFFDIO_COPY, &cp) || cp.copy != (long)PG)
			case_fail("step %d: UFFDIO_COPY: %s", k, strerror(errno));
	}
	struct uffdio_zeropage zp = {.range = {(uintptr_t)g + (G_PAGES - 1) * PG, PG}};
	if (ioctl(uffd, UFFDIO_ZEROPAGE, &zp))
		case_fail("step %d: UFFDIO_ZEROPAGE: %s", k, strerror(errno));
	struct uffdio_range ur = {(uintptr_t)g, G_PAGES * PG};
	if (ioctl(uffd, UFFDIO_UNREGISTER, &ur))
		case_fail("step %d: UFFDIO_UNREGISTER: %s", k, strerror(errno));
	close(uffd);
	if (G)
		munmap(G, G_PAGES * PG);
	G = g;
}

/* The program's own write-protect userfaultfd on U (async: its writes go
 * on), registered before the first pre-dump round and held until step 2:
 * the rounds in between find U registered by it and copy U in full. (Had
 * it registered U only after a round, it would get EBUSY: a mapping has
 * one userfaultfd, and the tracking holds U's.) */
static void own_userfaultfd_hold(void)
{
	uffd_held = syscall(SYS_userfaultfd, O_CLOEXEC);
	struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC};
	if (uffd_held < 0 || ioctl(uffd_held, UFFDIO_API, &api))
		case_fail("userfaultfd(WP_ASYNC): %s", strerror(errno));
	struct uffdio_register reg = {.range = {(uintptr_t)U, 16 * PG}, .mode = UFFDIO_REGISTER_MODE_WP};
	if (ioctl(uffd_held, UFFDIO_REGISTER, &reg))
		case_fail("UFFDIO_REGISTER(WP) of its own memory: %s", strerror(errno));
	struct uffdio_writeprotect wp = {.range = {(uintptr_t)U, 16 * PG}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
	if (ioctl(uffd_held, UFFDIO_WRITEPROTECT, &wp))
		case_fail("UFFDIO_WRITEPROTECT: %s", strerror(errno));
}

static void own_userfaultfd_write(int k)
{
	ugen = 700 + k;
	for (int i = 0; i < 16; i += 2)
		fill(pg(U, i), ugen, i);
	if (k == 2) {
		close(uffd_held); /* a dump refuses a userfaultfd it holds */
		uffd_held = -1;
	}
}

static void step(int k)
{
	/* 5% of A written */
	for (int i = 0; i < A_PAGES; i++)
		if ((i * 13 + k) % 20 == 0) {
			gen[i] = k;
			fill(pg(A, i), k, i);
		}
	/* some dropped */
	for (int i = 0; i < A_PAGES; i++)
		if ((i * 7 + k) % 97 == 1) {
			if (madvise(pg(A, i), PG, MADV_DONTNEED))
				case_fail("madvise: %s", strerror(errno));
			gen[i] = -1;
		}
	/* B replaced at the same address */
	if (munmap(B, B_PAGES * PG))
		case_fail("munmap B: %s", strerror(errno));
	void *nb = mmap(B, B_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (nb != B)
		case_fail("remap B: %s", strerror(errno));
	bgen = 200 + k;
	for (int i = 0; i < B_PAGES; i++)
		fill(pg(B, i), bgen, i);
	/* C1 and C2 swap places (same layout, contents moved) */
	void *tmp = aligned_hole(C_PAGES * PG, PROT_NONE);
	if (mremap(C1, C_PAGES * PG, C_PAGES * PG, MREMAP_MAYMOVE | MREMAP_FIXED, tmp) != tmp ||
	    mremap(C2, C_PAGES * PG, C_PAGES * PG, MREMAP_MAYMOVE | MREMAP_FIXED, C1) != (void *)C1 ||
	    mremap(tmp, C_PAGES * PG, C_PAGES * PG, MREMAP_MAYMOVE | MREMAP_FIXED, C2) != (void *)C2)
		case_fail("mremap swap: %s", strerror(errno));
	int t = c1tag;
	c1tag = c2tag;
	c2tag = t;
	/* a region moved elsewhere (new address each step) */
	void *dst = mmap(NULL, N_PAGES * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mremap(M, N_PAGES * PG, N_PAGES * PG, MREMAP_MAYMOVE | MREMAP_FIXED, dst) != dst)
		case_fail("mremap M: %s", strerror(errno));
	M = dst;
	moved_steps++;
	/* fork: the child writes its copies, the parent writes after it */
	pid_t c = fork();
	if (c < 0)
		case_fail("fork: %s", strerror(errno));
	if (c == 0) {
		for (int i = 0; i < A_PAGES; i += 3)
			pg(A, i)[1] ^= 0xdeadbeef;
		for (int i = 0; i < B_PAGES; i++)
			pg(B, i)[0] = 0;
		_exit(0);
	}
	int status;
	if (waitpid(c, &status, 0) != c || !WIFEXITED(status))
		case_fail("child: %s", strerror(errno));
	for (int i = 0; i < A_PAGES; i++)
		if ((i * 11 + k) % 40 == 3) {
			gen[i] = 50 + k;
			fill(pg(A, i), gen[i], i);
		}
	/* mprotect read-only and back, then written */
	if (mprotect(E, E_PAGES * PG, PROT_READ) || mprotect(E, E_PAGES * PG, PROT_READ | PROT_WRITE))
		case_fail("mprotect: %s", strerror(errno));
	egen = 300 + k;
	for (int i = 0; i < E_PAGES; i += 2)
		fill(pg(E, i), egen, i);
	/* its own userfaultfd */
	own_userfaultfd(k);
	/* H: its middle and upper thirds swapped with mremap (one VMA with
	 * its lower third: the kernel merges the moved parts into it and
	 * drops the tracking of all of it), then the lower third written */
	void *ht = mmap(NULL, 64 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mremap(pg(H, 64), 64 * PG, 64 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, ht) != ht ||
	    mremap(pg(H, 128), 64 * PG, 64 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, pg(H, 64)) != (void *)pg(H, 64) ||
	    mremap(ht, 64 * PG, 64 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, pg(H, 128)) != (void *)pg(H, 128))
		case_fail("mremap H: %s", strerror(errno));
	t = hmid;
	hmid = htop;
	htop = t;
	for (int i = k % 3; i < 64; i += 3) {
		hgen[i] = 600 + k;
		fill(pg(H, i), hgen[i], i);
	}
	own_userfaultfd_write(k);
	/* F: a private file mapping; a copied-on-write page dropped reads
	 * the file again, another is written */
	if (madvise(pg(F, k % 16), PG, MADV_DONTNEED))
		case_fail("madvise F: %s", strerror(errno));
	fgen[k % 16] = 0;
	fgen[(k + 5) % 16] = 800 + k;
	fill(pg(F, (k + 5) % 16), 800 + k, (k + 5) % 16);
	/* a new mapping */
	news[k] = map(N_PAGES);
	for (int i = 0; i < N_PAGES; i++)
		fill(pg(news[k], i), 400 + k, i);
}

static void verify(int steps)
{
	for (int i = 0; i < A_PAGES; i++) {
		if (gen[i] < 0 ? !zero(pg(A, i)) : !check(pg(A, i), gen[i], i))
			case_fail("A page %d: not generation %d", i, gen[i]);
	}
	for (int i = 0; i < B_PAGES; i++)
		if (!check(pg(B, i), bgen, i))
			case_fail("B page %d: not generation %d", i, bgen);
	for (int i = 0; i < C_PAGES; i++)
		if (!check(pg(C1, i), c1tag, i) || !check(pg(C2, i), c2tag, i))
			case_fail("C page %d: mremap'd contents wrong (c1 %d c2 %d)", i, c1tag, c2tag);
	for (int i = 0; i < N_PAGES; i++)
		if (!check(pg(M, i), 7, i))
			case_fail("moved region page %d wrong", i);
	for (int i = 0; i < E_PAGES; i++)
		if (!check(pg(E, i), i % 2 == 0 && egen ? egen : 8, i))
			case_fail("E page %d wrong", i);
	for (int i = 0; G && i < G_PAGES; i++)
		if (i == G_PAGES - 1 ? !zero(pg(G, i)) : !check(pg(G, i), ggen, i))
			case_fail("userfaultfd page %d wrong", i);
	for (int i = 0; i < 64; i++)
		if (!check(pg(H, i), hgen[i], i) || !check(pg(H, 64 + i), hmid, i) || !check(pg(H, 128 + i), htop, i))
			case_fail("H page %d wrong", i);
	for (int i = 0; i < 16; i++)
		if (!check(pg(U, i), i % 2 == 0 && ugen ? ugen : 9, i))
			case_fail("U page %d wrong (its own userfaultfd's memory)", i);
	for (int i = 0; i < 16; i++)
		if (!check(pg(F, i), fgen[i] ? fgen[i] : 900, i))
			case_fail("F page %d wrong (file mapping, generation %d)", i, fgen[i]);
	for (int k = 1; k <= steps; k++)
		for (int i = 0; news[k] && i < N_PAGES; i++)
			if (!check(pg(news[k], i), 400 + k, i))
				case_fail("new mapping of step %d page %d wrong", k, i);
}

int main(int argc, char **argv)
{
	case_init(argc, argv);
	A = map(A_PAGES);
	for (int i = 0; i < A_PAGES; i++)
		fill(pg(A, i), 0, i);
	B = map(B_PAGES);
	bgen = 9;
	for (int i = 0; i < B_PAGES; i++)
		fill(pg(B, i), bgen, i);
	C1 = map_aligned(C_PAGES);
	C2 = map_aligned(C_PAGES);
	for (int i = 0; i < C_PAGES; i++) {
		fill(pg(C1, i), 1, i);
		fill(pg(C2, i), 2, i);
	}
	M = map(N_PAGES);
	for (int i = 0; i < N_PAGES; i++)
		fill(pg(M, i), 7, i);
	E = map(E_PAGES);
	for (int i = 0; i < E_PAGES; i++)
		fill(pg(E, i), 8, i);
	/* F: 16 pages of a file, mapped private, all copied on write */
	int ffd = open("premig.file", O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (ffd < 0)
		case_fail("open: %s", strerror(errno));
	static uint64_t fb[PG / 8];
	for (int i = 0; i < 16; i++) {
		fill(fb, 900, i);
		if (write(ffd, fb, PG) != (ssize_t)PG)
			case_fail("write: %s", strerror(errno));
	}
	F = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, ffd, 0);
	if (F == MAP_FAILED)
		case_fail("mmap file: %s", strerror(errno));
	close(ffd);
	for (int i = 0; i < 16; i++) {
		fgen[i] = 800;
		fill(pg(F, i), 800, i);
	}
	U = map(16);
	for (int i = 0; i < 16; i++)
		fill(pg(U, i), 9, i);
	own_userfaultfd_hold();
	H = map(192);
	hmid = 1;
	htop = 2;
	for (int i = 0; i < 64; i++) {
		fill(pg(H, i), 0, i);
		fill(pg(H, 64 + i), hmid, i);
		fill(pg(H, 128 + i), htop, i);
	}
	case_ready();
	int k = 0;
	char path[PATH_MAX + 32];
	while (!case_go_requested()) {
		snprintf(path, sizeof(path), "%s/step%d", case_workdir, k + 1);
		if (access(path, F_OK) == 0 && k < MAXSTEP) {
			step(++k);
			verify(k);
			case_log("step %d done", k);
			continue;
		}
		case_sleep_ms(5);
	}
	verify(k);
	case_log("%d steps, %d moves", k, moved_steps);
	case_pass();
}

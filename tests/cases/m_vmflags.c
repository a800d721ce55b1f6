/*
 * m_vmflags: madvise flags and mprotect'ed protections of file and
 * anonymous mappings, with VMAs split by them, come back exactly.
 *
 * Also mlock'ed ("lo"), mlock2(MLOCK_ONFAULT)'ed ("lf") and mseal'ed ("sl")
 * anonymous regions, MAP_NORESERVE anonymous and file ("nr") and
 * MAP_DROPPABLE ("dp") ones, and four adjacent anonymous VMAs the kernel keeps
 * apart (three moved next to the first with mremap).
 *
 * Every region lives in its own slot of one PROT_NONE arena (first page of
 * each slot stays PROT_NONE), so the layout is deterministic.  Before
 * "ready" the case records "maps line | VmFlags" of every VMA of the arena
 * (m_vmas_text); after "go" it requires the same text, then checks
 * contents and behaviour: PROT_NONE pages fault, read-only ones fault on
 * write, a MAP_SHARED mapping made through an O_RDWR fd and mprotect'ed
 * read-only can be made writable again (VM_MAYWRITE, "mw") and writes reach
 * the file, one made through an O_RDONLY fd cannot (EACCES).
 */
#define _GNU_SOURCE
#include "case.h"
#include "m_mem.h"

#include <sys/syscall.h>
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif
#define SYS_MSEAL 462

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#define MADV_KEEPONFORK 19
#endif

enum {
	S_FPRIV_SPLIT, S_FPRIV_RO, S_FSH_RW_RO, S_FSH_ROFD, S_FPRIV_SPLIT_ADV,
	S_ANON_SPLIT, S_LOCK, S_LOCKONFAULT, S_SEAL, S_MREMAP, S_NORESERVE,
	S_FNORESERVE, S_DROPPABLE,
	S_ADV0 /* one slot per advice entry, file then anon */
};
#define SLOT_PAGES 20
#define FILE_A_PAGES 8
#define FILE_B_PAGES 4

static const struct {
	int advice, undo; /* undo: a second advice that clears it again */
	const char *name, *flag;
	int anon;
} adv[] = {
	{MADV_RANDOM, 0, "file MADV_RANDOM", "rr", 0},
	{MADV_SEQUENTIAL, 0, "file MADV_SEQUENTIAL", "sr", 0},
	{MADV_DONTFORK, 0, "file MADV_DONTFORK", "dc", 0},
	{MADV_DONTDUMP, 0, "file MADV_DONTDUMP", "dd", 0},
	{MADV_HUGEPAGE, 0, "file MADV_HUGEPAGE", "hg", 0},
	{MADV_NOHUGEPAGE, 0, "file MADV_NOHUGEPAGE", "nh", 0},
	{MADV_MERGEABLE, 0, "file MADV_MERGEABLE", "mg", 0},
	{MADV_RANDOM, 0, "anon MADV_RANDOM", "rr", 1},
	{MADV_SEQUENTIAL, 0, "anon MADV_SEQUENTIAL", "sr", 1},
	{MADV_MERGEABLE, 0, "anon MADV_MERGEABLE", "mg", 1},
	{MADV_WIPEONFORK, 0, "anon MADV_WIPEONFORK", "wf", 1},
	{MADV_DONTFORK, MADV_DOFORK, "anon MADV_DONTFORK+DOFORK", NULL, 1},
	{MADV_WIPEONFORK, MADV_KEEPONFORK, "anon MADV_WIPEONFORK+KEEPONFORK", NULL, 1},
	{MADV_DONTDUMP, MADV_DODUMP, "anon MADV_DONTDUMP+DODUMP", NULL, 1},
	{MADV_HUGEPAGE, 0, "anon MADV_HUGEPAGE", "hg", 1},
};
#define NADV (int)(sizeof adv / sizeof adv[0])
#define NSLOTS (S_ADV0 + NADV)

static long pg;
static char *arena;

static char *slot(int k) { return arena + ((size_t)k * SLOT_PAGES + 1) * pg; }

static char *map_at(int k, size_t pages, int prot, int flags, int fd, off_t off)
{
	char *p = mmap(slot(k), pages * pg, prot, flags | MAP_FIXED, fd, off);
	CHECK(p == slot(k), "mmap slot %d: %s", k, strerror(errno));
	return p;
}

static void must(int rc, const char *what)
{
	CHECK(rc == 0, "%s: %s", what, strerror(errno));
}

int main(int argc, char **argv)
{
	char a_path[PATH_MAX + 16], b_path[PATH_MAX + 16];
	const int RW = PROT_READ | PROT_WRITE;

	case_init(argc, argv);
	pg = sysconf(_SC_PAGESIZE);
	arena = mmap(NULL, (size_t)NSLOTS * SLOT_PAGES * pg, PROT_NONE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(arena != MAP_FAILED, "mmap arena: %s", strerror(errno));
	uintptr_t lo = (uintptr_t)arena;
	uintptr_t hi = lo + (size_t)NSLOTS * SLOT_PAGES * pg;

	char *buf = malloc(FILE_A_PAGES * pg);
	snprintf(a_path, sizeof a_path, "%s/vmflags_a.dat", case_workdir);
	m_fill(buf, FILE_A_PAGES * pg, 50);
	m_write_file(a_path, buf, FILE_A_PAGES * pg);
	snprintf(b_path, sizeof b_path, "%s/vmflags_b.dat", case_workdir);
	m_fill(buf, FILE_B_PAGES * pg, 60);
	m_write_file(b_path, buf, FILE_B_PAGES * pg);
	int a_rw = open(a_path, O_RDWR | O_CLOEXEC);
	int a_ro = open(a_path, O_RDONLY | O_CLOEXEC);
	int b_rw = open(b_path, O_RDWR | O_CLOEXEC);
	int b_ro = open(b_path, O_RDONLY | O_CLOEXEC);
	CHECK(a_rw >= 0 && a_ro >= 0 && b_rw >= 0 && b_ro >= 0, "open: %s",
	      strerror(errno));

	/* private RW file mapping: pages 0 and 4 written (COW), 2-3
	 * PROT_NONE, 4-5 read-only: 4 VMAs */
	char *fs = map_at(S_FPRIV_SPLIT, FILE_A_PAGES, RW, MAP_PRIVATE, a_rw, 0);
	m_fill(fs, pg, 1000);
	m_fill(fs + 4 * pg, pg, 1004);
	must(mprotect(fs + 2 * pg, 2 * pg, PROT_NONE), "mprotect NONE");
	must(mprotect(fs + 4 * pg, 2 * pg, PROT_READ), "mprotect R");

	/* private read-only file mapping through an O_RDONLY fd: page 1
	 * PROT_NONE, page 2 made writable and written */
	char *fr = map_at(S_FPRIV_RO, 4, PROT_READ, MAP_PRIVATE, a_ro, pg);
	must(mprotect(fr + pg, pg, PROT_NONE), "mprotect NONE");
	must(mprotect(fr + 2 * pg, pg, RW), "mprotect RW");
	m_fill(fr + 2 * pg, pg, 1102);

	/* shared mapping through O_RDWR, then read-only: keeps "mw" */
	char *fsw = map_at(S_FSH_RW_RO, FILE_B_PAGES, RW, MAP_SHARED, b_rw, 0);
	must(mprotect(fsw, FILE_B_PAGES * pg, PROT_READ), "mprotect R");
	/* shared mapping through O_RDONLY: no "mw" */
	char *fso = map_at(S_FSH_ROFD, 2, PROT_READ, MAP_SHARED, b_ro, 0);

	/* private file mapping split by advice: pages 1-2 sequential, 3-4
	 * dontdump */
	char *fa = map_at(S_FPRIV_SPLIT_ADV, 6, PROT_READ, MAP_PRIVATE, a_ro, 0);
	must(madvise(fa + pg, 2 * pg, MADV_SEQUENTIAL), "MADV_SEQUENTIAL");
	must(madvise(fa + 3 * pg, 2 * pg, MADV_DONTDUMP), "MADV_DONTDUMP");

	/* anonymous split: 2-3 dontfork, 4 random, 5 read-only */
	char *as = map_at(S_ANON_SPLIT, 6, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	m_fill(as, 6 * pg, 2000);
	must(madvise(as + 2 * pg, 2 * pg, MADV_DONTFORK), "MADV_DONTFORK");
	must(madvise(as + 4 * pg, pg, MADV_RANDOM), "MADV_RANDOM");
	must(mprotect(as + 5 * pg, pg, PROT_READ), "mprotect R");

	/* mlock'ed (lo), mlock'ed on fault (lo lf), sealed (sl) */
	char *lk = map_at(S_LOCK, 2, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	m_fill(lk, 2 * pg, 2100);
	must(mlock(lk, 2 * pg), "mlock");
	char *lf = map_at(S_LOCKONFAULT, 4, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	m_fill(lf, pg, 2200);
	must(syscall(SYS_mlock2, lf, 4 * pg, MLOCK_ONFAULT), "mlock2(MLOCK_ONFAULT)");
	char *sl = map_at(S_SEAL, 2, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (syscall(SYS_MSEAL, sl, 2 * pg, 0) != 0)
		case_log("mseal: %s: not checked", strerror(errno));

	/* adjacent anonymous VMAs the kernel keeps apart: B, C and D moved
	 * next to A with mremap (as realloc does), C and D then read-only */
	char *ma = map_at(S_MREMAP, 4, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	m_fill(ma, 4 * pg, 2300);
	for (int k = 1; k <= 3; k++) {
		char *t = mmap(NULL, 4 * pg, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		CHECK(t != MAP_FAILED, "mmap: %s", strerror(errno));
		m_fill(t, 4 * pg, 2300 + k);
		CHECK(mremap(t, 4 * pg, 4 * pg, MREMAP_MAYMOVE | MREMAP_FIXED,
			     ma + 4 * k * pg) == ma + 4 * k * pg,
		      "mremap: %s", strerror(errno));
		if (k >= 2)
			must(mprotect(ma + 4 * k * pg, 4 * pg, PROT_READ), "mprotect R");
	}

	/* MAP_NORESERVE anon and private file (nr, no ac); MAP_DROPPABLE
	 * (dp, with wf dd) where the kernel has it */
	char *nr = map_at(S_NORESERVE, 4, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	m_fill(nr, pg, 2400);
	char *fnr = map_at(S_FNORESERVE, 4, RW, MAP_PRIVATE | MAP_NORESERVE, a_rw, 0);
	m_fill(fnr + pg, pg, 2401);
	char *dp = mmap(slot(S_DROPPABLE), 2 * pg, RW, 0x08 /* MAP_DROPPABLE */ |
			MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (dp == MAP_FAILED)
		case_log("MAP_DROPPABLE: %s: not checked", strerror(errno));

	for (int i = 0; i < NADV; i++) {
		char *p;
		if (adv[i].anon) {
			p = map_at(S_ADV0 + i, 4, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			m_fill(p, 4 * pg, 3000 + i);
		} else {
			p = map_at(S_ADV0 + i, 4, PROT_READ, MAP_PRIVATE, a_ro, 0);
		}
		if (madvise(p, 4 * pg, adv[i].advice) != 0) {
			CHECK(adv[i].advice == MADV_MERGEABLE, "%s: %s",
			      adv[i].name, strerror(errno));
			case_log("%s: %s (no KSM?)", adv[i].name, strerror(errno));
			continue;
		}
		if (adv[i].undo)
			must(madvise(p, 4 * pg, adv[i].undo), adv[i].name);
		if (adv[i].flag && !m_has_flag(p, adv[i].flag))
			case_log("setup: %s did not set VmFlag %s (%s)",
				 adv[i].name, adv[i].flag, m_flags_at(p));
	}
	close(a_rw);
	close(a_ro);
	close(b_rw);
	close(b_ro);
	CHECK(m_has_flag(fsw, "mw") && !m_has_flag(fso, "mw"),
	      "setup: mw flags unexpected: %s / %s", m_flags_at(fsw),
	      m_flags_at(fso));

	char *before = m_vmas_text(lo, hi);
	m_save_or_compare("vmas.before", before, 1);
	case_log("%s", before);

	case_ready();
	case_wait_go();

	m_save_or_compare("vmas.before", m_vmas_text(lo, hi), 0);

	/* contents: file pages as in the file, COWed pages as written */
	int fd = open(a_path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0 && pread(fd, buf, FILE_A_PAGES * pg, 0) ==
				 FILE_A_PAGES * pg, "read %s", a_path);
	close(fd);
	CHECK(m_same(buf, FILE_A_PAGES * pg, 50), "%s changed on disk", a_path);
	CHECK(m_same(fs, pg, 1000) && m_same(fs + 4 * pg, pg, 1004),
	      "written private file pages differ");
	CHECK(memcmp(fs + pg, buf + pg, pg) == 0 &&
	      memcmp(fs + 5 * pg, buf + 5 * pg, 3 * pg) == 0,
	      "unwritten private file pages differ from the file");
	CHECK(m_faults(fs + 2 * pg, 0) && m_faults(fs + 3 * pg, 0),
	      "PROT_NONE file pages readable");
	CHECK(m_faults(fs + 4 * pg, 1) && !m_faults(fs + 4 * pg, 0),
	      "read-only file pages not read-only");
	CHECK(!m_faults(fs + 7 * pg, 1), "RW file page not writable");
	CHECK(memcmp(fr, buf + pg, pg) == 0 && m_faults(fr + pg, 0) &&
	      m_same(fr + 2 * pg, pg, 1102) && m_faults(fr + 3 * pg, 1),
	      "read-only private file mapping differs");
	CHECK(m_same(as, 6 * pg, 2000) && m_faults(as + 5 * pg, 1),
	      "anonymous split region differs");
	CHECK(m_same(nr, pg, 2400) && m_zero(nr + pg, 3 * pg) &&
	      memcmp(fnr, buf, pg) == 0 && m_same(fnr + pg, pg, 2401),
	      "MAP_NORESERVE regions differ");
	for (int k = 0; k <= 3; k++)
		CHECK(m_same(ma + 4 * k * pg, 4 * pg, 2300 + k),
		      "mremap'ed region %d differs", k);
	CHECK(!m_faults(ma, 1) && !m_faults(ma + 4 * pg, 1) &&
	      m_faults(ma + 8 * pg, 1) && m_faults(ma + 12 * pg, 1),
	      "mremap'ed regions: protections differ");
	CHECK(m_same(lk, 2 * pg, 2100) && m_same(lf, pg, 2200) &&
	      m_zero(lf + pg, 3 * pg), "locked regions differ");
	for (int i = 0; i < NADV; i++)
		if (adv[i].anon)
			CHECK(m_same(slot(S_ADV0 + i), 4 * pg, 3000 + i),
			      "%s region differs", adv[i].name);

	/* sharing: VM_MAYWRITE kept and lacking as before */
	CHECK(m_same(fsw, FILE_B_PAGES * pg, 60), "shared file map differs");
	CHECK(m_faults(fsw, 1), "read-only shared mapping writable");
	must(mprotect(fsw, pg, RW), "mprotect RW of the O_RDWR shared mapping");
	m_fill(fsw, pg, 6060);
	fd = open(b_path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0 && pread(fd, buf, pg, 0) == pg, "read %s", b_path);
	close(fd);
	CHECK(m_same(buf, pg, 6060), "write to the shared mapping missed the file");
	CHECK(mprotect(fso, pg, RW) != 0 && errno == EACCES,
	      "mprotect RW of a shared mapping of an O_RDONLY fd: %s",
	      strerror(errno));
	case_pass();
}

/*
 * m_guard: guard pages (MADV_GUARD_INSTALL, Linux 6.13+; file mappings
 * 6.15+) come back where they were, without their neighbours changing.
 *
 *   slot 0  anon RW, 16 pages filled; guards on pages 3-4 and 10
 *   slot 1  anon RW, 4 pages, all guard (no page to dump at all)
 *   slot 2  private file mapping (O_RDONLY fd), 4 pages, guard on page 1
 *   slot 3  private RW file mapping, page 0 written (COW), guard on page 2
 *   slot 4  anon, a guard installed and removed again (VmFlags "gu" only)
 *
 * Before "ready" the case records maps+VmFlags of the arena and the list of
 * guard pages (pagemap bit 58); after "go" both must be the same, every
 * guard page faults (SIGSEGV) on read and write, the other pages hold
 * their contents.
 */
#define _GNU_SOURCE
#include "case.h"
#include "m_mem.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#define MADV_GUARD_REMOVE 103
#endif
#define PM_GUARD (1ULL << 58)

#define SLOT_PAGES 32
#define NSLOTS 5
static long pg;
static char *arena;

static char *slot(int k) { return arena + ((size_t)k * SLOT_PAGES + 1) * pg; }

static char *map_at(int k, size_t pages, int prot, int flags, int fd)
{
	char *p = mmap(slot(k), pages * pg, prot, flags | MAP_FIXED, fd, 0);
	CHECK(p == slot(k), "mmap slot %d: %s", k, strerror(errno));
	return p;
}

static void guard(char *p, size_t pages)
{
	CHECK(madvise(p, pages * pg, MADV_GUARD_INSTALL) == 0,
	      "MADV_GUARD_INSTALL: %s", strerror(errno));
}

/* "slot page" of every guard page of the arena, from pagemap bit 58. */
static char *guard_list(void)
{
	size_t n = (size_t)NSLOTS * SLOT_PAGES;
	uint64_t *e = malloc(n * 8);
	char *out = malloc(n * 16 + 1);
	size_t len = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0 && e && out, "open pagemap: %s", strerror(errno));
	CHECK(pread(fd, e, n * 8, (uintptr_t)arena / pg * 8) == (ssize_t)(n * 8),
	      "read pagemap: %s", strerror(errno));
	close(fd);
	out[0] = 0;
	for (size_t i = 0; i < n; i++)
		if (e[i] & PM_GUARD)
			len += sprintf(out + len, "%zu %zu\n", i / SLOT_PAGES,
				       i % SLOT_PAGES - 1);
	free(e);
	return out;
}

int main(int argc, char **argv)
{
	char path[PATH_MAX + 16];
	const int RW = PROT_READ | PROT_WRITE, PA = MAP_PRIVATE | MAP_ANONYMOUS;

	case_init(argc, argv);
	pg = sysconf(_SC_PAGESIZE);
	arena = mmap(NULL, (size_t)NSLOTS * SLOT_PAGES * pg, PROT_NONE, PA, -1, 0);
	CHECK(arena != MAP_FAILED, "mmap arena: %s", strerror(errno));
	uintptr_t lo = (uintptr_t)arena, hi = lo + (size_t)NSLOTS * SLOT_PAGES * pg;

	char *a = map_at(0, 16, RW, PA, -1);
	m_fill(a, 16 * pg, 70);
	guard(a + 3 * pg, 2);
	guard(a + 10 * pg, 1);

	char *g = map_at(1, 4, RW, PA, -1);
	guard(g, 4);

	char *buf = malloc(4 * pg);
	snprintf(path, sizeof path, "%s/guard.dat", case_workdir);
	m_fill(buf, 4 * pg, 71);
	m_write_file(path, buf, 4 * pg);
	int ro = open(path, O_RDONLY | O_CLOEXEC), rw = open(path, O_RDWR | O_CLOEXEC);
	CHECK(ro >= 0 && rw >= 0, "open %s: %s", path, strerror(errno));
	char *f = map_at(2, 4, PROT_READ, MAP_PRIVATE, ro);
	guard(f + pg, 1);
	char *fw = map_at(3, 4, RW, MAP_PRIVATE, rw);
	m_fill(fw, pg, 72);
	guard(fw + 2 * pg, 1);
	close(ro);
	close(rw);

	char *rm = map_at(4, 2, RW, PA, -1);
	m_fill(rm, 2 * pg, 73);
	guard(rm + pg, 1);
	CHECK(madvise(rm + pg, pg, MADV_GUARD_REMOVE) == 0,
	      "MADV_GUARD_REMOVE: %s", strerror(errno));

	char *vmas = m_vmas_text(lo, hi), *guards = guard_list();
	case_log("guard pages (slot page):\n%s", guards);
	CHECK(strstr(vmas, " gu"), "setup: no VMA flagged gu:\n%s", vmas);
	m_save_or_compare("vmas.before", vmas, 1);
	m_save_or_compare("guards.before", guards, 1);

	case_ready();
	case_wait_go();

	m_save_or_compare("vmas.before", m_vmas_text(lo, hi), 0);
	m_save_or_compare("guards.before", guard_list(), 0);

	for (int i = 0; i < 16; i++) {
		char *p = a + i * pg;
		if (i == 3 || i == 4 || i == 10) {
			CHECK(m_faults(p, 0) && m_faults(p + pg - 1, 1),
			      "anon guard page %d does not fault", i);
		}
	}
	/* neighbours: pattern of the whole region, page by page */
	for (int i = 0; i < 16; i++) {
		if (i == 3 || i == 4 || i == 10)
			continue;
		const uint64_t *w = (const uint64_t *)(a + i * pg);
		for (size_t j = 0; j < pg / 8; j++)
			CHECK(w[j] == m_word(70, i * pg / 8 + j),
			      "anon page %d differs", i);
	}
	for (int i = 0; i < 4; i++)
		CHECK(m_faults(g + i * pg, 0), "all-guard page %d does not fault", i);
	CHECK(memcmp(f, buf, pg) == 0 && memcmp(f + 2 * pg, buf + 2 * pg, 2 * pg) == 0,
	      "file mapping pages differ");
	CHECK(m_faults(f + pg, 0), "file guard page does not fault");
	CHECK(m_same(fw, pg, 72) && memcmp(fw + pg, buf + pg, pg) == 0 &&
	      memcmp(fw + 3 * pg, buf + 3 * pg, pg) == 0,
	      "written file mapping pages differ");
	CHECK(m_faults(fw + 2 * pg, 1), "written file mapping guard does not fault");
	CHECK(m_same(rm, pg, 73) && m_zero(rm + pg, pg),
	      "removed-guard region differs");
	case_pass();
}

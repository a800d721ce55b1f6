/*
 * b_vmas: one VMA of every kind the engine must dump and restore.
 *
 * All regions live in one PROT_NONE arena, one region per slot, so the
 * layout is deterministic: the kernel cannot merge neighbouring regions and
 * the PROT_NONE remainder of each slot doubles as a guard region.
 *
 *   slot  0  sparse private anon RW: some pages written, the others never
 *            touched (plus one written page dropped with MADV_DONTNEED)
 *   slot  1  PROT_NONE guard (left as part of the arena)
 *   slot  2  read-only private anon with data (filled, then mprotect R)
 *   slot  3  MAP_GROWSDOWN
 *   slot  4  MADV_DONTFORK   (VmFlags dc)
 *   slot  5  MADV_DONTDUMP   (VmFlags dd)
 *   slot  6  MADV_HUGEPAGE   (VmFlags hg)
 *   slot  7  MADV_NOHUGEPAGE (VmFlags nh)
 *   slot  8  MAP_SHARED|MAP_ANONYMOUS with data
 *   slot  9  memfd mapped MAP_SHARED at offset 0 (fd closed afterwards)
 *   slot 10  the same memfd mapped again at offset 1 page
 *   slot 11  MAP_PRIVATE of WORKDIR/vmas_priv.dat at offset 1 page,
 *            modified in memory (COW)
 *   slot 12  MAP_SHARED of WORKDIR/vmas_shared.dat, written in memory
 *   slot 13  anon VMA named with PR_SET_VMA_ANON_NAME, if supported
 *
 * Before "ready" the case saves "start-end perms offset path" of every VMA
 * in the arena plus the [vdso] line to WORKDIR/maps.before, and the VmFlags
 * of every region (see flags_of) to WORKDIR/vmflags.before. After "go" it
 * checks contents, maps lines, VmFlags, protection (faults where expected),
 * sharing semantics and the vDSO clock.
 */
#define _GNU_SOURCE
#include "case.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#endif
#ifndef PR_SET_VMA_ANON_NAME
#define PR_SET_VMA_ANON_NAME 0
#endif

/* CHECK fails the case (case_fail exits) unless cond holds. */
#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

enum {
	S_SPARSE, S_GUARD, S_RO, S_GROWSDOWN, S_DONTFORK, S_DONTDUMP,
	S_HUGE, S_NOHUGE, S_SHANON, S_MEMFD0, S_MEMFD1, S_PRIVFILE,
	S_SHFILE, S_NAMED, NSLOTS
};
#define SLOT_PAGES 64
#define SPARSE_PAGES 48
#define SPARSE_DROPPED 7 /* written, then MADV_DONTNEED: must read zero */
#define FILE_PAGES 4

static long pg;
static char *arena;
static const char *wd;
static int have_named;

/* Start of slot k; the first page of every slot stays PROT_NONE. */
static char *slot(int k) { return arena + ((size_t)k * SLOT_PAGES + 1) * pg; }

/* Deterministic pattern: 64-bit words derived from a seed and the index. */
static uint64_t word(uint64_t seed, size_t i)
{
	uint64_t x = (seed << 32) ^ (i * 0x9E3779B97F4A7C15ull) ^ 0x5bd1e995;
	x ^= x >> 29;
	return x | 1; /* never zero, so "untouched" is distinguishable */
}

static void fill(void *p, size_t len, uint64_t seed)
{
	uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i++)
		w[i] = word(seed, i);
}

/*
 * Offset of the first byte of p that differs from the pattern, or -1; p
 * holds the pattern from byte offset base on.
 */
static long mismatch_at(const void *p, size_t len, uint64_t seed, size_t base)
{
	const uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i++)
		if (w[i] != word(seed, base / 8 + i))
			return (long)(i * 8);
	return -1;
}

static long mismatch(const void *p, size_t len, uint64_t seed)
{
	return mismatch_at(p, len, seed, 0);
}

static int all_zero(const void *p, size_t len)
{
	const uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i++)
		if (w[i])
			return 0;
	return 1;
}

/* ---- probing for faults ---- */

static sigjmp_buf probe_env;

static void on_segv(int sig)
{
	(void)sig;
	siglongjmp(probe_env, 1);
}

/* 1 if reading (write=0) or writing (write=1) *p faults with SIGSEGV. */
static int faults(volatile char *p, int write)
{
	struct sigaction sa = {0}, old;
	int hit;

	sa.sa_handler = on_segv;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old);
	if (sigsetjmp(probe_env, 1) == 0) {
		if (write)
			*p = *p;
		else
			(void)*p;
		hit = 0;
	} else {
		hit = 1;
	}
	sigaction(SIGSEGV, &old, NULL);
	return hit;
}

/* ---- /proc/self/maps and smaps ---- */

/*
 * Canonical "start-end perms offset path" lines of every VMA overlapping the
 * arena, followed by the [vdso] line. Inode and device are left out: a
 * restored shmem/memfd object necessarily has a new inode.
 */
static char *maps_text(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[4096];
	size_t cap = 1 << 16, len = 0;
	char *out = malloc(cap);
	uintptr_t lo = (uintptr_t)arena;
	uintptr_t hi = lo + (size_t)NSLOTS * SLOT_PAGES * pg;

	CHECK(f && out, "open /proc/self/maps: %s", strerror(errno));
	out[0] = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e, off;
		char perms[8];
		int n = 0;
		if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %n", &s, &e, perms,
			   &off, &n) < 4 || n == 0)
			continue;
		char *path = line + n;
		path[strcspn(path, "\n")] = 0;
		int in_arena = e > lo && s < hi;
		if (!in_arena && strcmp(path, "[vdso]") != 0)
			continue;
		CHECK(len + 512 + strlen(path) < cap, "maps_text: too many lines");
		len += sprintf(out + len, "%lx-%lx %s %08lx %s\n", s, e, perms,
			       off, path);
	}
	fclose(f);
	return out;
}

/*
 * VmFlags of the VMA containing addr, with "sd" (soft-dirty, a tracking bit
 * that any new mapping gets and a dumper may clear) removed.
 */
static void flags_of(const void *addr, char *buf, size_t size)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[4096];
	int in = 0;

	CHECK(f, "open /proc/self/smaps: %s", strerror(errno));
	buf[0] = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e;
		char c;
		if (sscanf(line, "%lx-%lx %c", &s, &e, &c) == 3 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = (uintptr_t)addr >= s && (uintptr_t)addr < e;
			continue;
		}
		if (!in || strncmp(line, "VmFlags:", 8) != 0)
			continue;
		size_t len = 0;
		for (char *tok = strtok(line + 8, " \n"); tok;
		     tok = strtok(NULL, " \n")) {
			if (strcmp(tok, "sd") == 0)
				continue;
			len += snprintf(buf + len, size - len, "%s ", tok);
		}
		break;
	}
	fclose(f);
}

static int has_flag(const char *flags, const char *fl)
{
	char pat[8];
	snprintf(pat, sizeof pat, "%s ", fl);
	for (const char *p = flags; (p = strstr(p, pat)); p++)
		if (p == flags || p[-1] == ' ')
			return 1;
	return 0;
}

/* Region whose VmFlags are recorded and compared, and the flag it must have. */
static const struct {
	int slot;
	const char *must;
} flag_regions[] = {
	{S_SPARSE, "wr"},   {S_RO, "rd"},       {S_GROWSDOWN, "gd"},
	{S_DONTFORK, "dc"}, {S_DONTDUMP, "dd"}, {S_HUGE, "hg"},
	{S_NOHUGE, "nh"},   {S_SHANON, "sh"},   {S_MEMFD0, "sh"},
	{S_MEMFD1, "sh"},   {S_PRIVFILE, "wr"}, {S_SHFILE, "sh"},
	{S_NAMED, "wr"},
};
#define NFLAGREG (sizeof flag_regions / sizeof flag_regions[0])

static char *flags_text(void)
{
	static char out[NFLAGREG * 256];
	size_t len = 0;
	char fl[200];

	for (size_t i = 0; i < NFLAGREG; i++) {
		if (flag_regions[i].slot == S_NAMED && !have_named)
			continue;
		flags_of(slot(flag_regions[i].slot), fl, sizeof fl);
		len += snprintf(out + len, sizeof out - len, "slot %d: %s\n",
				flag_regions[i].slot, fl);
	}
	return out;
}

/* ---- small file helpers ---- */

static void write_file(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0, "create %s: %s", path, strerror(errno));
	CHECK(write(fd, data, len) == (ssize_t)len, "write %s", path);
	close(fd);
}

static char *read_file(const char *path)
{
	static char buf[1 << 17];
	int fd = open(path, O_RDONLY);
	CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
	ssize_t n = read(fd, buf, sizeof buf - 1);
	CHECK(n >= 0 && n < (ssize_t)sizeof buf - 1, "read %s", path);
	buf[n] = 0;
	close(fd);
	return buf;
}

/* First line where a and b differ, for failure messages. */
static const char *first_diff(const char *a, const char *b)
{
	static char msg[600];
	while (*a && *a == *b) {
		const char *na = strchr(a, '\n'), *nb = strchr(b, '\n');
		if (!na || !nb || na - a != nb - b || memcmp(a, b, na - a))
			break;
		a = na + 1;
		b = nb + 1;
	}
	snprintf(msg, sizeof msg, "before {%.*s} now {%.*s}",
		 (int)strcspn(a, "\n"), a, (int)strcspn(b, "\n"), b);
	return msg;
}

static char *map_fixed(int k, size_t pages, int prot, int flags, int fd,
		       off_t off)
{
	char *p = mmap(slot(k), pages * pg, prot, flags | MAP_FIXED, fd, off);
	CHECK(p == slot(k), "mmap slot %d: %s", k, strerror(errno));
	return p;
}

static int64_t ns(clockid_t c)
{
	struct timespec ts;
	CHECK(clock_gettime(c, &ts) == 0, "clock_gettime: %s", strerror(errno));
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	char path[PATH_MAX], priv_path[PATH_MAX], sh_path[PATH_MAX];
	const int PA = MAP_PRIVATE | MAP_ANONYMOUS, RW = PROT_READ | PROT_WRITE;

	case_init(argc, argv);
	wd = argv[1];
	pg = sysconf(_SC_PAGESIZE);

	arena = mmap(NULL, (size_t)NSLOTS * SLOT_PAGES * pg, PROT_NONE, PA, -1,
		     0);
	CHECK(arena != MAP_FAILED, "mmap arena: %s", strerror(errno));

	/* sparse: every 5th page and the last one written, the rest not. */
	char *sp = map_fixed(S_SPARSE, SPARSE_PAGES, RW, PA, -1, 0);
	for (int i = 0; i < SPARSE_PAGES; i++)
		if (i % 5 == 0 || i == SPARSE_PAGES - 1 || i == SPARSE_DROPPED)
			fill(sp + i * pg, pg, 100 + i);
	CHECK(madvise(sp + SPARSE_DROPPED * pg, pg, MADV_DONTNEED) == 0,
	      "MADV_DONTNEED: %s", strerror(errno));

	/* read-only anon with data */
	char *ro = map_fixed(S_RO, 2, RW, PA, -1, 0);
	fill(ro, 2 * pg, 2);
	CHECK(mprotect(ro, 2 * pg, PROT_READ) == 0, "mprotect: %s",
	      strerror(errno));

	char *gd = map_fixed(S_GROWSDOWN, 8, RW, PA | MAP_GROWSDOWN, -1, 0);
	fill(gd, 8 * pg, 3);

	static const struct {
		int slot, advice;
		const char *name;
	} adv[] = {
		{S_DONTFORK, MADV_DONTFORK, "MADV_DONTFORK"},
		{S_DONTDUMP, MADV_DONTDUMP, "MADV_DONTDUMP"},
		{S_HUGE, MADV_HUGEPAGE, "MADV_HUGEPAGE"},
		{S_NOHUGE, MADV_NOHUGEPAGE, "MADV_NOHUGEPAGE"},
	};
	for (int i = 0; i < 4; i++) {
		char *p = map_fixed(adv[i].slot, 4, RW, PA, -1, 0);
		fill(p, 4 * pg, adv[i].slot);
		CHECK(madvise(p, 4 * pg, adv[i].advice) == 0, "%s: %s",
		      adv[i].name, strerror(errno));
	}

	char *sha = map_fixed(S_SHANON, 4, RW, MAP_SHARED | MAP_ANONYMOUS, -1,
			      0);
	fill(sha, 4 * pg, S_SHANON);

	/* memfd: written with write(), mapped twice, fd closed. */
	int mfd = memfd_create("b_vmas", 0);
	CHECK(mfd >= 0, "memfd_create: %s", strerror(errno));
	CHECK(ftruncate(mfd, FILE_PAGES * pg) == 0, "ftruncate memfd");
	{
		char *tmp = malloc(FILE_PAGES * pg);
		fill(tmp, FILE_PAGES * pg, S_MEMFD0);
		CHECK(write(mfd, tmp, FILE_PAGES * pg) == FILE_PAGES * pg,
		      "write memfd");
		free(tmp);
	}
	char *m0 = map_fixed(S_MEMFD0, FILE_PAGES, RW, MAP_SHARED, mfd, 0);
	char *m1 = map_fixed(S_MEMFD1, FILE_PAGES - 1, RW, MAP_SHARED, mfd, pg);
	close(mfd);

	/* files in WORKDIR: one mapped private and changed (COW), one shared */
	char *filebuf = malloc(FILE_PAGES * pg);
	snprintf(priv_path, sizeof priv_path, "%s/vmas_priv.dat", wd);
	fill(filebuf, FILE_PAGES * pg, 11);
	write_file(priv_path, filebuf, FILE_PAGES * pg);
	int pfd = open(priv_path, O_RDWR);
	CHECK(pfd >= 0, "open %s", priv_path);
	/* file pages 1..3 at slot 11; mapping page 1 (= file page 2) is changed */
	char *pv = map_fixed(S_PRIVFILE, FILE_PAGES - 1, RW, MAP_PRIVATE, pfd,
			     pg);
	close(pfd);
	fill(pv + pg, pg, 1111);

	snprintf(sh_path, sizeof sh_path, "%s/vmas_shared.dat", wd);
	fill(filebuf, FILE_PAGES * pg, 12);
	write_file(sh_path, filebuf, FILE_PAGES * pg);
	int sfd = open(sh_path, O_RDWR);
	CHECK(sfd >= 0, "open %s", sh_path);
	char *sv = map_fixed(S_SHFILE, FILE_PAGES, RW, MAP_SHARED, sfd, 0);
	close(sfd);
	fill(sv, pg, 1212); /* page 0 changed through the mapping */

	/* named anon VMA */
	char *nm = map_fixed(S_NAMED, 2, RW, PA, -1, 0);
	fill(nm, 2 * pg, S_NAMED);
	if (prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)nm, 2 * pg,
		  (unsigned long)"b_vmas_named") == 0)
		have_named = 1;
	else
		case_log("PR_SET_VMA_ANON_NAME unsupported (%s): not checked",
			 strerror(errno));

	/* Sanity: the setup itself produced what is to be checked. */
	char fl[200];
	for (size_t i = 0; i < NFLAGREG; i++) {
		if (flag_regions[i].slot == S_NAMED && !have_named)
			continue;
		flags_of(slot(flag_regions[i].slot), fl, sizeof fl);
		CHECK(has_flag(fl, flag_regions[i].must),
		      "setup: slot %d lacks VmFlag %s (has %s)",
		      flag_regions[i].slot, flag_regions[i].must, fl);
	}
	char *maps_before = maps_text();
	CHECK(!have_named || strstr(maps_before, "[anon:b_vmas_named]"),
	      "setup: named VMA not in maps");
	CHECK(strstr(maps_before, "[vdso]"), "setup: no [vdso] in maps");
	snprintf(path, sizeof path, "%s/maps.before", wd);
	write_file(path, maps_before, strlen(maps_before));
	char *flags_before = flags_text();
	snprintf(path, sizeof path, "%s/vmflags.before", wd);
	write_file(path, flags_before, strlen(flags_before));
	unsigned long vdso_before = getauxval(AT_SYSINFO_EHDR);
	int64_t mono_before = ns(CLOCK_MONOTONIC);

	case_ready();
	case_wait_go();

	/* vDSO clock: works and did not go backwards. */
	int64_t prev = ns(CLOCK_MONOTONIC);
	CHECK(prev >= mono_before, "CLOCK_MONOTONIC went back: %lld < %lld",
	      (long long)prev, (long long)mono_before);
	for (int i = 0; i < 10000; i++) {
		int64_t now = ns(CLOCK_MONOTONIC);
		CHECK(now >= prev, "CLOCK_MONOTONIC not monotonic");
		prev = now;
	}
	CHECK(ns(CLOCK_REALTIME) > 1600000000ll * 1000000000,
	      "CLOCK_REALTIME implausible");
	CHECK(getauxval(AT_SYSINFO_EHDR) == vdso_before,
	      "AT_SYSINFO_EHDR changed: %lx -> %lx", vdso_before,
	      getauxval(AT_SYSINFO_EHDR));

	/* maps lines and VmFlags exactly as before */
	snprintf(path, sizeof path, "%s/maps.before", wd);
	char *saved = strdup(read_file(path));
	char *maps_now = maps_text();
	CHECK(strcmp(saved, maps_now) == 0, "maps differ: %s",
	      first_diff(saved, maps_now));
	snprintf(path, sizeof path, "%s/vmflags.before", wd);
	saved = strdup(read_file(path));
	char *flags_now = flags_text();
	CHECK(strcmp(saved, flags_now) == 0, "VmFlags differ: %s",
	      first_diff(saved, flags_now));

	/* sparse region: written pages intact, the others still zero */
	for (int i = 0; i < SPARSE_PAGES; i++) {
		char *p = sp + i * pg;
		if (i != SPARSE_DROPPED && (i % 5 == 0 || i == SPARSE_PAGES - 1)) {
			long off = mismatch(p, pg, 100 + i);
			CHECK(off < 0, "sparse page %d differs at +%ld", i, off);
		} else {
			CHECK(all_zero(p, pg), "sparse page %d not zero", i);
		}
	}

	/* guard regions fault, read-only data intact and still read-only */
	CHECK(faults(slot(S_GUARD), 0), "guard region readable");
	CHECK(faults(slot(S_SPARSE) - 1, 0), "slot guard page readable");
	CHECK(mismatch(ro, 2 * pg, 2) < 0, "read-only region differs");
	CHECK(faults(ro, 1), "read-only region writable");
	CHECK(!faults(sp + pg, 1), "sparse region not writable");

	CHECK(mismatch(gd, 8 * pg, 3) < 0, "growsdown region differs");
	for (int i = 0; i < 4; i++)
		CHECK(mismatch(slot(adv[i].slot), 4 * pg, adv[i].slot) < 0,
		      "%s region differs", adv[i].name);
	CHECK(mismatch(sha, 4 * pg, S_SHANON) < 0, "shared anon differs");

	/* memfd: contents, and both mappings still share one object */
	CHECK(mismatch(m0, FILE_PAGES * pg, S_MEMFD0) < 0, "memfd map differs");
	CHECK(memcmp(m1, m0 + pg, (FILE_PAGES - 1) * pg) == 0,
	      "memfd second mapping (offset 1 page) differs");
	fill(m0 + 2 * pg, pg, 999);
	CHECK(mismatch(m1 + pg, pg, 999) < 0,
	      "memfd mappings no longer share pages");

	/* private file mapping: memory as changed, file on disk unchanged */
	int fd = open(priv_path, O_RDONLY);
	CHECK(fd >= 0, "open %s", priv_path);
	CHECK(pread(fd, filebuf, FILE_PAGES * pg, 0) == FILE_PAGES * pg,
	      "pread %s", priv_path);
	CHECK(mismatch(filebuf, FILE_PAGES * pg, 11) < 0,
	      "%s changed on disk", priv_path);
	CHECK(memcmp(pv, filebuf + pg, pg) == 0, "private map page 0 differs");
	CHECK(mismatch(pv + pg, pg, 1111) < 0,
	      "private map page 1 lost its in-memory change");
	CHECK(memcmp(pv + 2 * pg, filebuf + 3 * pg, pg) == 0,
	      "private map page 2 differs");
	fill(pv + 2 * pg, pg, 2222);
	CHECK(pread(fd, filebuf, pg, 3 * pg) == pg, "pread");
	CHECK(memcmp(filebuf, pv + 2 * pg, pg) != 0,
	      "private mapping write reached the file");
	close(fd);

	/* shared file mapping: contents, and writes reach the file */
	CHECK(mismatch(sv, pg, 1212) < 0, "shared file map page 0 differs");
	CHECK(mismatch_at(sv + pg, (FILE_PAGES - 1) * pg, 12, pg) < 0,
	      "shared file map pages 1-3 differ");
	fd = open(sh_path, O_RDONLY);
	CHECK(fd >= 0, "open %s", sh_path);
	CHECK(pread(fd, filebuf, FILE_PAGES * pg, 0) == FILE_PAGES * pg,
	      "pread %s", sh_path);
	CHECK(memcmp(filebuf, sv, FILE_PAGES * pg) == 0,
	      "shared file mapping differs from the file");
	fill(sv + 3 * pg, pg, 3333);
	CHECK(pread(fd, filebuf, pg, 3 * pg) == pg, "pread");
	CHECK(mismatch(filebuf, pg, 3333) < 0,
	      "write to shared file mapping did not reach the file");
	close(fd);

	if (have_named)
		CHECK(mismatch(nm, 2 * pg, S_NAMED) < 0, "named VMA differs");

	case_pass();
}

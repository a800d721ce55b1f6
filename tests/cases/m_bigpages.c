/*
 * m_bigpages: large memory, moved by the dump through pipes (vmsplice in the
 * task, splice into the image), comes back exactly, mixed with what the
 * pipes do not carry:
 *
 *   big     512 MiB anon RW, half MADV_HUGEPAGE, every page a pattern
 *   sparse  8 MiB, every other page written (runs of one page: more iovecs
 *           than a pipe holds), the rest never touched (reads zero)
 *   zeroes  4 MiB, pages written and pages only read (the zero page)
 *   noread  2 MiB written, then PROT_NONE (read through /proc/PID/mem)
 *   rdonly  2 MiB written, then PROT_READ
 *   guard   a guard page in the middle of a 2 MiB written region
 *           (Linux 6.13+; skipped where madvise refuses it)
 *   child   a forked child shares 32 MiB copy-on-write with the parent and
 *           rewrote its second half; both check their view after go. Its
 *           RLIMIT_NOFILE leaves no room for the dump's pipes: its pages
 *           take the copying path, and its fd table must come back as it
 *           was (nothing left open by the dump)
 *
 * Everything is checked from inside after the restores.
 */
#define _GNU_SOURCE
#include "case.h"
#include "m_mem.h"

#include <sys/resource.h>
#include <sys/wait.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define MiB (1024UL * 1024)
static long pg;

static char *map_anon(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED, "mmap %zu: %s", len, strerror(errno));
	return p;
}

/* fill_pages writes pattern seed+i into page i of p (n pages). */
static void fill_pages(char *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		m_fill(p + i * pg, pg, seed + i);
}

static int same_pages(const char *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		if (!m_same(p + i * pg, pg, seed + i))
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	case_init(argc, argv);
	pg = sysconf(_SC_PAGESIZE);

	size_t bign = 512 * MiB / pg;
	char *big = map_anon(512 * MiB);
	madvise(big, 256 * MiB, MADV_HUGEPAGE);
	fill_pages(big, bign, 1000);

	size_t spn = 8 * MiB / pg;
	char *sparse = map_anon(8 * MiB);
	for (size_t i = 0; i < spn; i += 2)
		m_fill(sparse + i * pg, pg, 5000000 + i);

	size_t zn = 4 * MiB / pg;
	char *zeroes = map_anon(4 * MiB);
	volatile char sink = 0;
	for (size_t i = 0; i < zn; i++) {
		if (i % 3 == 0)
			m_fill(zeroes + i * pg, pg, 6000000 + i);
		else
			sink += zeroes[i * pg]; /* maps the zero page */
	}
	(void)sink;

	size_t nn = 2 * MiB / pg;
	char *noread = map_anon(2 * MiB);
	fill_pages(noread, nn, 7000000);
	CHECK(mprotect(noread, 2 * MiB, PROT_NONE) == 0, "mprotect none: %s",
	      strerror(errno));

	char *rdonly = map_anon(2 * MiB);
	fill_pages(rdonly, nn, 8000000);
	CHECK(mprotect(rdonly, 2 * MiB, PROT_READ) == 0, "mprotect ro: %s",
	      strerror(errno));

	char *guard = map_anon(2 * MiB);
	fill_pages(guard, nn, 9000000);
	int guarded = madvise(guard + nn / 2 * pg, pg, MADV_GUARD_INSTALL) == 0;

	size_t cn = 32 * MiB / pg;
	char *cow = map_anon(32 * MiB);
	fill_pages(cow, cn, 10000000);
	int ready[2];
	CHECK(pipe(ready) == 0, "pipe");
	pid_t child = fork();
	CHECK(child >= 0, "fork: %s", strerror(errno));
	if (child == 0) {
		fill_pages(cow + cn / 2 * pg, cn / 2, 11000000);
		close(ready[0]);
		int maxfd = 0;
		for (int fd = 0; fd < 64; fd++)
			if (fcntl(fd, F_GETFD) >= 0)
				maxfd = fd;
		struct rlimit rl = { maxfd + 2, 1024 };
		CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit: %s", strerror(errno));
		CHECK(write(ready[1], "r", 1) == 1, "child ready");
		case_wait_go();
		int extra = 0;
		for (int fd = maxfd + 1; fd < 1024; fd++)
			if (fcntl(fd, F_GETFD) >= 0)
				extra++;
		int ok = same_pages(cow, cn / 2, 10000000) &&
			 same_pages(cow + cn / 2 * pg, cn / 2, 11000000) &&
			 same_pages(big, 64, 1000) && extra == 0;
		_exit(ok ? 0 : 3);
	}
	char c;
	CHECK(read(ready[0], &c, 1) == 1, "wait child");

	case_ready();
	case_wait_go();

	CHECK(same_pages(big, bign, 1000), "big region differs");
	for (size_t i = 0; i < spn; i++) {
		char *p = sparse + i * pg;
		CHECK(i % 2 ? m_zero(p, pg) : m_same(p, pg, 5000000 + i),
		      "sparse page %zu differs", i);
	}
	for (size_t i = 0; i < zn; i++) {
		char *p = zeroes + i * pg;
		CHECK(i % 3 ? m_zero(p, pg) : m_same(p, pg, 6000000 + i),
		      "zeroes page %zu differs", i);
	}
	CHECK(m_faults(noread, 0), "PROT_NONE region readable");
	CHECK(mprotect(noread, 2 * MiB, PROT_READ) == 0, "mprotect back");
	CHECK(same_pages(noread, nn, 7000000), "PROT_NONE region differs");
	CHECK(m_faults(rdonly, 1), "read-only region writable");
	CHECK(same_pages(rdonly, nn, 8000000), "read-only region differs");
	for (size_t i = 0; i < nn; i++) {
		char *p = guard + i * pg;
		if (guarded && i == nn / 2)
			CHECK(m_faults(p, 0), "guard page readable");
		else
			CHECK(m_same(p, pg, 9000000 + i), "guarded region page %zu differs", i);
	}
	CHECK(same_pages(cow, cn, 10000000), "parent's copy-on-write region differs");
	int st;
	CHECK(waitpid(child, &st, 0) == child, "waitpid: %s", strerror(errno));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child's view differs (status %#x)", st);
	case_pass();
}

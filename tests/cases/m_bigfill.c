/*
 * m_bigfill: a big private anonymous region (48 MiB, every byte from a
 * pattern) next to a read-only one and a PROT_NONE one (4 MiB each,
 * written before their mprotect). Restore
 * fills such memory three ways (the task reads most of the big region
 * from the image itself, ctr-cr writes its tail beside it, and the
 * read-only and inaccessible regions go through /proc/PID/mem): after go,
 * every byte of the three still holds its pattern.
 */
#define _GNU_SOURCE
#include "case.h"

#include <sys/mman.h>

#define BIG (48UL << 20)
#define SMALL (4UL << 20)

static unsigned char pattern(size_t i, unsigned seed)
{
	return (unsigned char)((i * 2654435761u) >> 13) ^ (unsigned char)(i >> 12) ^ seed;
}

static unsigned char *region(size_t n, unsigned seed, int prot)
{
	unsigned char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		case_fail("mmap %zu bytes: %s", n, strerror(errno));
	for (size_t i = 0; i < n; i++)
		m[i] = pattern(i, seed);
	if (prot != (PROT_READ | PROT_WRITE) && mprotect(m, n, prot))
		case_fail("mprotect: %s", strerror(errno));
	return m;
}

static void check(const unsigned char *m, size_t n, unsigned seed, const char *what)
{
	for (size_t i = 0; i < n; i++)
		if (m[i] != pattern(i, seed))
			case_fail("%s: byte at offset %zu is %d, want %d", what, i, m[i], pattern(i, seed));
}

int main(int argc, char **argv)
{
	case_init(argc, argv);
	unsigned char *big = region(BIG, 0x11, PROT_READ | PROT_WRITE);
	unsigned char *ro = region(SMALL, 0x22, PROT_READ);
	unsigned char *none = region(SMALL, 0x33, PROT_NONE);
	case_ready();
	case_wait_go();
	check(big, BIG, 0x11, "big writable region");
	check(ro, SMALL, 0x22, "read-only region");
	if (mprotect(none, SMALL, PROT_READ))
		case_fail("mprotect PROT_NONE region readable: %s", strerror(errno));
	check(none, SMALL, 0x33, "PROT_NONE region");
	case_pass();
}

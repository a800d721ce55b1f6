/*
 * e_bigmem.c - a process with a lot of memory (argv[2] MiB, default 512)
 * filled with a pattern, for dumps long enough to interrupt. After go: the
 * whole region still holds the pattern, and the code still runs (a gadget
 * left behind by an interrupted dump would have broken it).
 */
#include "case.h"
#include <sys/mman.h>

static unsigned char pattern(size_t i) { return (unsigned char)((i >> 12) * 31 + 7); }

int main(int argc, char **argv)
{
	case_init(argc, argv);
	size_t mib = argc > 2 ? (size_t)atoi(argv[2]) : 512;
	size_t n = mib << 20;
	unsigned char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (m == MAP_FAILED)
		case_fail("mmap %zu MiB: %s", mib, strerror(errno));
	for (size_t i = 0; i < n; i += 512)
		m[i] = pattern(i);
	case_log("%zu MiB at %p", mib, (void *)m);
	case_ready();
	case_wait_go();
	for (size_t i = 0; i < n; i += 512)
		if (m[i] != pattern(i))
			case_fail("byte at offset %zu is %d, want %d", i, m[i], pattern(i));
	case_pass();
}

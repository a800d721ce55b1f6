/*
 * m_dirty.c - a process holding MIB MiB (argv[2], default 256) that keeps
 * writing about 4 MiB a second of it (issue 16's migration workload).
 *
 * Every page holds a pattern of its number and its generation; the
 * generation table lives in the process's own memory, so it travels with
 * the pages. After "ready" the case writes ~40 pages every 10 ms (the next
 * ones, round robin, a new generation each) until WORKDIR/go appears;
 * then it checks every page against the table, from inside, and passes.
 * It prints how many pages it wrote in all (the rounds between pre-dumps
 * must have had something to track).
 */
#include "case.h"

#include <stdint.h>
#include <sys/mman.h>

#define PG 4096UL

static uint64_t word(uint64_t page, uint32_t gen, uint64_t j)
{
	return (page * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)gen << 40) ^ j;
}

static void fill(uint8_t *mem, uint64_t page, uint32_t gen)
{
	uint64_t *p = (uint64_t *)(mem + page * PG);
	for (uint64_t j = 0; j < PG / 8; j += 8)
		p[j] = word(page, gen, j);
}

int main(int argc, char **argv)
{
	case_init(argc, argv);
	unsigned long mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 256;
	uint64_t pages = mib * (1 << 20) / PG;
	uint8_t *mem = mmap(NULL, pages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint32_t *gen = mmap(NULL, pages * sizeof(*gen), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED || gen == MAP_FAILED)
		case_fail("mmap: %s", strerror(errno));
	for (uint64_t i = 0; i < pages; i++)
		fill(mem, i, gen[i] = 1);
	case_log("%lu MiB filled", mib);
	case_ready();
	uint64_t next = 0, written = 0;
	while (!case_go_requested()) {
		for (int k = 0; k < 40; k++) {
			gen[next]++;
			fill(mem, next, gen[next]);
			next = (next + 1) % pages;
			written++;
		}
		case_sleep_ms(10);
	}
	for (uint64_t i = 0; i < pages; i++) {
		const uint64_t *p = (const uint64_t *)(mem + i * PG);
		for (uint64_t j = 0; j < PG / 8; j += 8)
			if (p[j] != word(i, gen[i], j))
				case_fail("page %lu word %lu: %#lx, want generation %u", (unsigned long)i,
					  (unsigned long)j, (unsigned long)p[j], gen[i]);
	}
	case_log("every page checked; %lu pages written since ready", (unsigned long)written);
	case_pass();
}

/*
 * b_brk: the heap (brk area) survives with its contents and its bounds, and
 * keeps growing afterwards.
 *
 * Setup: ~2 MiB of small malloc() chunks (glibc serves them from the brk
 * heap) each filled with a pattern, then 2 MiB more taken directly with
 * sbrk() and filled. Recorded: the kernel's brk (brk(0) syscall, not glibc's
 * cached sbrk(0)), start_brk from /proc/self/stat and the [heap] maps line.
 *
 * After "go": every chunk and the raw sbrk area intact, kernel brk and
 * start_brk unchanged, [heap] unchanged, sbrk(+1 MiB) succeeds at the old
 * break and is writable, and malloc keeps working.
 */
#define _GNU_SOURCE
#include "case.h"

#include <errno.h>
#include <stdint.h>
#include <sys/syscall.h>

/* CHECK fails the case (case_fail exits) unless cond holds. */
#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#define NCHUNKS 20000
#define CHUNK_MAX 200
#define RAW_SIZE (2u << 20)
#define GROW_SIZE (1u << 20)

static unsigned char *chunks[NCHUNKS];

static size_t chunk_len(int i) { return 16 + (size_t)(i * 37) % CHUNK_MAX; }
static unsigned char pat(unsigned seed, size_t i)
{
	return (unsigned char)(seed * 131 + i * 7 + (i >> 8));
}

static void fill(unsigned char *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = pat(seed, i);
}

static long mismatch(const unsigned char *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != pat(seed, i))
			return (long)i;
	return -1;
}

/* The kernel's current break: brk(0) fails and returns the current one. */
static uintptr_t kernel_brk(void) { return (uintptr_t)syscall(SYS_brk, 0); }

/* Field 47 of /proc/self/stat: start_brk. */
static unsigned long start_brk(void)
{
	char buf[4096];
	FILE *f = fopen("/proc/self/stat", "r");
	CHECK(f && fgets(buf, sizeof buf, f), "read /proc/self/stat");
	fclose(f);
	char *p = strrchr(buf, ')'); /* comm may contain spaces */
	CHECK(p, "parse /proc/self/stat");
	int field = 2;
	unsigned long v = 0;
	for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " "))
		if (++field == 47) {
			v = strtoul(tok, NULL, 10);
			break;
		}
	CHECK(field == 47 && v, "no start_brk in /proc/self/stat");
	return v;
}

/* "start-end perms" of the [heap] line of /proc/self/maps. */
static void heap_line(char *out, size_t size)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "r");
	CHECK(f, "open maps");
	out[0] = 0;
	while (fgets(line, sizeof line, f))
		if (strstr(line, "[heap]")) {
			snprintf(out, size, "%.*s", (int)strcspn(line, " ") + 5,
				 line);
			break;
		}
	fclose(f);
	CHECK(out[0], "no [heap] in /proc/self/maps");
}

int main(int argc, char **argv)
{
	case_init(argc, argv);

	for (int i = 0; i < NCHUNKS; i++) {
		chunks[i] = malloc(chunk_len(i));
		CHECK(chunks[i], "malloc");
		fill(chunks[i], chunk_len(i), i);
	}
	unsigned char *raw = sbrk(RAW_SIZE);
	CHECK(raw != (void *)-1, "sbrk(%u): %s", RAW_SIZE, strerror(errno));
	fill(raw, RAW_SIZE, 7);

	uintptr_t brk_before = kernel_brk();
	void *sbrk_before = sbrk(0);
	unsigned long start_brk_before = start_brk();
	char heap_before[128], heap_now[128];
	heap_line(heap_before, sizeof heap_before);
	CHECK(brk_before == (uintptr_t)raw + RAW_SIZE,
	      "setup: brk %#lx != end of raw area %p", (unsigned long)brk_before,
	      raw + RAW_SIZE);
	CHECK((uintptr_t)chunks[0] >= start_brk_before &&
		      (uintptr_t)chunks[0] < brk_before,
	      "setup: malloc chunk %p not on the brk heap", chunks[0]);
	case_log("heap %s brk %#lx", heap_before, (unsigned long)brk_before);

	case_ready();
	case_wait_go();

	CHECK(kernel_brk() == brk_before, "kernel brk %#lx, was %#lx",
	      (unsigned long)kernel_brk(), (unsigned long)brk_before);
	CHECK(sbrk(0) == sbrk_before, "sbrk(0) changed");
	CHECK(start_brk() == start_brk_before, "start_brk %#lx, was %#lx",
	      start_brk(), start_brk_before);
	heap_line(heap_now, sizeof heap_now);
	CHECK(strcmp(heap_now, heap_before) == 0, "[heap] is %s, was %s",
	      heap_now, heap_before);

	for (int i = 0; i < NCHUNKS; i++) {
		long off = mismatch(chunks[i], chunk_len(i), i);
		CHECK(off < 0, "malloc chunk %d differs at +%ld", i, off);
	}
	long off = mismatch(raw, RAW_SIZE, 7);
	CHECK(off < 0, "sbrk area differs at +%ld", off);

	/* The heap still grows, right at the old break. */
	unsigned char *more = sbrk(GROW_SIZE);
	CHECK(more != (void *)-1, "sbrk(+1 MiB) after restore: %s",
	      strerror(errno));
	CHECK((uintptr_t)more == brk_before, "sbrk returned %p, expected %#lx",
	      more, (unsigned long)brk_before);
	CHECK(kernel_brk() == brk_before + GROW_SIZE, "kernel brk did not grow");
	fill(more, GROW_SIZE, 9);
	CHECK(mismatch(more, GROW_SIZE, 9) < 0, "grown area differs");
	CHECK(mismatch(raw, RAW_SIZE, 7) < 0, "sbrk area changed by growth");

	/* malloc still works: free half, allocate again, check the rest. */
	for (int i = 0; i < NCHUNKS; i += 2)
		free(chunks[i]);
	for (int i = 0; i < NCHUNKS; i += 2) {
		chunks[i] = malloc(chunk_len(i) + 8);
		CHECK(chunks[i], "malloc after restore");
		fill(chunks[i], chunk_len(i) + 8, i + 1);
	}
	for (int i = 0; i < NCHUNKS; i++) {
		size_t len = chunk_len(i) + (i % 2 ? 0 : 8);
		CHECK(mismatch(chunks[i], len, i + (i % 2 ? 0 : 1)) < 0,
		      "chunk %d corrupted after reuse", i);
	}
	case_pass();
}

/*
 * m_hugezero: a 1 GiB MADV_HUGEPAGE region that was only read (the kernel
 * maps its huge zero page there) plus a few written pages.  The dump must
 * not save the huge zero page as data (the Go test checks the image size
 * from outside); from inside, the region still reads zero except the
 * written pages, which are intact, and it keeps its "hg" flag.
 */
#define _GNU_SOURCE
#include "case.h"
#include "m_mem.h"

#include <linux/fs.h>
#include <sys/ioctl.h>

#define HUGE (2UL << 20)
#define REGION (1UL << 30)

/* PAGEMAP_SCAN (linux/fs.h of 6.7+), declared here for older headers. */
struct m_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask,
		return_mask;
};
struct m_region {
	uint64_t start, end, categories;
};
#define M_PAGEMAP_SCAN _IOWR('f', 16, struct m_scan_arg)
#define M_PAGE_IS_PFNZERO (1 << 5)
#define M_PAGE_IS_HUGE (1 << 6)

/* Bytes of [p, p+len) mapped to the huge zero page. */
static uint64_t huge_zero_bytes(char *p, size_t len)
{
	static struct m_region v[1024];
	uint64_t total = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "open pagemap: %s", strerror(errno));
	uint64_t start = (uintptr_t)p, end = start + len;
	while (start < end) {
		struct m_scan_arg a = {
			.size = sizeof a, .start = start, .end = end,
			.vec = (uintptr_t)v, .vec_len = 1024,
			.category_mask = M_PAGE_IS_PFNZERO | M_PAGE_IS_HUGE,
			.return_mask = M_PAGE_IS_PFNZERO | M_PAGE_IS_HUGE,
		};
		long n = ioctl(fd, M_PAGEMAP_SCAN, &a);
		CHECK(n >= 0, "PAGEMAP_SCAN: %s", strerror(errno));
		for (long i = 0; i < n; i++)
			total += v[i].end - v[i].start;
		if (a.walk_end <= start)
			break;
		start = a.walk_end;
	}
	close(fd);
	return total;
}

static const size_t written[] = {0, 7 * HUGE + 3 * 4096, 300 * HUGE + 17 * 4096,
				 REGION - 4096};
#define NWRITTEN (sizeof written / sizeof written[0])

int main(int argc, char **argv)
{
	case_init(argc, argv);
	char *m = mmap(NULL, REGION + HUGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	CHECK(m != MAP_FAILED, "mmap: %s", strerror(errno));
	char *r = (char *)(((uintptr_t)m + HUGE - 1) & ~(HUGE - 1));
	CHECK(madvise(r, REGION, MADV_HUGEPAGE) == 0, "MADV_HUGEPAGE: %s",
	      strerror(errno));
	volatile char sink = 0;
	for (size_t off = 0; off < REGION; off += HUGE)
		sink += r[off];
	(void)sink;
	for (size_t i = 0; i < NWRITTEN; i++)
		m_fill(r + written[i], 4096, 40 + i);
	uint64_t hz = huge_zero_bytes(r, REGION);
	case_log("huge zero page maps %lu MiB of the 1 GiB region",
		 (unsigned long)(hz >> 20));
	CHECK(hz >= REGION / 2,
	      "setup: the kernel mapped the huge zero page on only %lu MiB "
	      "(THP enabled/use_zero_page?)", (unsigned long)(hz >> 20));
	CHECK(m_has_flag(r, "hg"), "setup: no hg flag");

	case_ready();
	case_wait_go();

	CHECK(m_has_flag(r, "hg"), "hg flag lost: %s", m_flags_at(r));
	for (size_t i = 0; i < NWRITTEN; i++)
		CHECK(m_same(r + written[i], 4096, 40 + i),
		      "written page at +%#zx differs", written[i]);
	for (size_t off = 0; off < REGION; off += 4096) {
		int w = 0;
		for (size_t i = 0; i < NWRITTEN; i++)
			w |= off == written[i];
		if (!w)
			CHECK(m_zero(r + off, 4096), "page at +%#zx not zero", off);
	}
	case_pass();
}

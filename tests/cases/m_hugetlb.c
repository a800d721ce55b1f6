/*
 * m_hugetlb: a private anonymous hugetlb mapping (MAP_HUGETLB, 2 MiB
 * pages, "/anon_hugepage (deleted)") comes back as one, with its contents:
 * huge page 0 written whole, page 1 never touched, page 2 written in part.
 * From inside: same maps line and VmFlags ("ht"), KernelPageSize 2048 kB,
 * contents.  The Go test reserves the huge pages (vm.nr_hugepages).
 *
 * With M_HUGETLB_SHARED=1 in the environment a MAP_SHARED one (2 huge
 * pages) is mapped too: after "go" it must hold its contents, have the same
 * maps line and flags, and still be shared (a forked child's write is seen).
 * With M_HUGETLB_MEMFD=1 a memfd_create(MFD_HUGETLB) file is mapped (a
 * hugetlbfs file: the dump must refuse it by name).
 */
#define _GNU_SOURCE
#include "case.h"
#include "m_mem.h"

#include <sys/wait.h>

#define HUGE (2UL << 20)

static long kernel_page_kb(void *addr)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	int in = 0;
	long kb = -1;
	CHECK(f, "open smaps: %s", strerror(errno));
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = (uintptr_t)addr >= s && (uintptr_t)addr < e;
			continue;
		}
		if (in && sscanf(line, "KernelPageSize: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

int main(int argc, char **argv)
{
	case_init(argc, argv);
	char *h = mmap(NULL, 3 * HUGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	CHECK(h != MAP_FAILED, "setup: mmap MAP_HUGETLB: %s (huge pages reserved?)",
	      strerror(errno));
	m_fill(h, HUGE, 80);
	m_fill(h + 2 * HUGE + 8192, 3 * 4096, 82);
	char *s = NULL;
	if (getenv("M_HUGETLB_SHARED")) {
		s = mmap(NULL, 2 * HUGE, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
		CHECK(s != MAP_FAILED, "setup: mmap shared MAP_HUGETLB: %s",
		      strerror(errno));
		m_fill(s + HUGE + 4096, 4096, 83);
	}
	if (getenv("M_HUGETLB_MEMFD")) {
		int fd = memfd_create("m_hugetlb", MFD_HUGETLB | MFD_CLOEXEC);
		CHECK(fd >= 0 && ftruncate(fd, HUGE) == 0, "setup: hugetlb memfd: %s",
		      strerror(errno));
		char *f = mmap(NULL, HUGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		CHECK(f != MAP_FAILED, "setup: map hugetlb memfd: %s", strerror(errno));
		f[0] = 1;
	}
	CHECK(kernel_page_kb(h) == 2048, "setup: KernelPageSize %ld kB",
	      kernel_page_kb(h));
	uintptr_t lo = (uintptr_t)h, hi = lo + 3 * HUGE;
	char *vmas = m_vmas_text(lo, hi);
	CHECK(strstr(vmas, "/anon_hugepage") && strstr(vmas, " ht"),
	      "setup: unexpected maps: %s", vmas);
	m_save_or_compare("vmas.before", vmas, 1);
	if (s)
		m_save_or_compare("shared.before",
				  m_vmas_text((uintptr_t)s, (uintptr_t)s + 2 * HUGE), 1);

	case_ready();
	case_wait_go();

	m_save_or_compare("vmas.before", m_vmas_text(lo, hi), 0);
	if (s) {
		m_save_or_compare("shared.before",
				  m_vmas_text((uintptr_t)s, (uintptr_t)s + 2 * HUGE), 0);
		CHECK(kernel_page_kb(s) == 2048, "shared: KernelPageSize %ld kB",
		      kernel_page_kb(s));
		CHECK(m_zero(s, HUGE + 4096) && m_same(s + HUGE + 4096, 4096, 83) &&
		      m_zero(s + HUGE + 8192, HUGE - 8192), "shared contents differ");
		pid_t c = fork();
		CHECK(c >= 0, "fork: %s", strerror(errno));
		if (c == 0) {
			m_fill(s, 4096, 85);
			_exit(0);
		}
		int st;
		CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st), "child failed");
		CHECK(m_same(s, 4096, 85), "shared hugetlb mapping no longer shared");
	}
	CHECK(kernel_page_kb(h) == 2048, "KernelPageSize %ld kB, want 2048",
	      kernel_page_kb(h));
	CHECK(m_same(h, HUGE, 80), "huge page 0 differs");
	CHECK(m_zero(h + HUGE, HUGE), "huge page 1 not zero");
	CHECK(m_zero(h + 2 * HUGE, 8192) && m_same(h + 2 * HUGE + 8192, 3 * 4096, 82) &&
	      m_zero(h + 2 * HUGE + 5 * 4096, HUGE - 5 * 4096),
	      "huge page 2 differs");
	/* still a private hugetlb mapping: writable, faults allocate */
	m_fill(h + HUGE, 4096, 84);
	CHECK(m_same(h + HUGE, 4096, 84), "write to huge page 1 lost");
	case_pass();
}

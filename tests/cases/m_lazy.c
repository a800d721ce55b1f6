/*
 * m_lazy.c - memory for restore --lazy-pages (issue 16): argv[2] MiB
 * (default 64) of private anonymous memory, every 8-byte word of it
 * distinct, plus a heap block and a stack array. After go, while pages may
 * still be arriving, it first does what a lazy restore must follow: forks
 * a child that checks the whole region (its pages come through the
 * child's own userfaultfd context), munmaps a range and maps fresh memory
 * there (zeros), drops a range with MADV_DONTNEED (zeros), moves a range
 * with mremap (the pattern at the new address), and uses a userfaultfd of
 * its own on a new mapping; then it checks everything else.
 * With -DOWN_UFFD_AT_DUMP it holds a userfaultfd of its own (with a
 * registered page) from before "ready": its dump is refused by name.
 */
#include "case.h"
#include <fcntl.h>
#include <stdint.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define MIB (1UL << 20)

static uint64_t word(size_t i) { return 0x9e3779b97f4a7c15ULL * (i + 1) ^ (i >> 3); }

static void check(const uint64_t *m, size_t from, size_t to, const char *what)
{
	for (size_t i = from; i < to; i++)
		if (m[i] != word(i))
			case_fail("%s: word %zu (page %zu) is %#llx, want %#llx", what, i, i * 8 / 4096,
				  (unsigned long long)m[i], (unsigned long long)word(i));
}

static void check_zero(const unsigned char *p, size_t n, const char *what)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			case_fail("%s: byte %zu is %d, want 0", what, i, p[i]);
}

/* own_uffd registers a new page with a userfaultfd of the program's own
 * and fills it with UFFDIO_COPY. */
static void own_uffd(void)
{
	int fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		case_fail("userfaultfd: %s", strerror(errno));
	struct uffdio_api api = { .api = UFFD_API };
	if (ioctl(fd, UFFDIO_API, &api) != 0)
		case_fail("UFFDIO_API: %s", strerror(errno));
	unsigned char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	static unsigned char src[4096] __attribute__((aligned(4096)));
	memset(src, 0x5a, sizeof(src));
	struct uffdio_register reg = { .range = { (unsigned long)p, 4096 }, .mode = UFFDIO_REGISTER_MODE_MISSING };
	if (ioctl(fd, UFFDIO_REGISTER, &reg) != 0)
		case_fail("UFFDIO_REGISTER of its own: %s", strerror(errno));
	struct uffdio_copy cp = { .dst = (unsigned long)p, .src = (unsigned long)src, .len = 4096 };
	if (ioctl(fd, UFFDIO_COPY, &cp) != 0)
		case_fail("UFFDIO_COPY of its own: %s", strerror(errno));
	if (p[100] != 0x5a)
		case_fail("own userfaultfd page: %d", p[100]);
	close(fd);
	munmap(p, 4096);
}

int main(int argc, char **argv)
{
	case_init(argc, argv);
	size_t mib = argc > 2 ? (size_t)atoi(argv[2]) : 64;
	if (mib < 40)
		mib = 40;
	size_t n = mib * MIB, words = n / 8;
	uint64_t *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		case_fail("mmap %zu MiB: %s", mib, strerror(errno));
	for (size_t i = 0; i < words; i++)
		m[i] = word(i);
	uint64_t *heap = malloc(256 * 1024);
	for (size_t i = 0; i < 32768; i++)
		heap[i] = word(i + 7);
	volatile uint64_t stack[512];
	for (size_t i = 0; i < 512; i++)
		stack[i] = word(i + 11);
#ifdef OWN_UFFD_AT_DUMP
	int held = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api hapi = { .api = UFFD_API };
	if (held < 0 || ioctl(held, UFFDIO_API, &hapi) != 0)
		case_fail("userfaultfd: %s", strerror(errno));
	void *hp = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct uffdio_register hreg = { .range = { (unsigned long)hp, 4096 }, .mode = UFFDIO_REGISTER_MODE_MISSING };
	if (ioctl(held, UFFDIO_REGISTER, &hreg) != 0)
		case_fail("UFFDIO_REGISTER: %s", strerror(errno));
	case_log("holds userfaultfd %d", held);
#endif
	case_log("%zu MiB at %p", mib, (void *)m);
	case_ready();
	case_wait_go();

	/* a kernel-mode fault on a missing page: read(2) into the region
	 * (the same words it holds), through a pipe */
	{
		int pfd[2];
		size_t at = 32 * MIB / 8;
		uint64_t words_in[512];
		for (size_t i = 0; i < 512; i++)
			words_in[i] = word(at + i);
		if (pipe(pfd) != 0 || write(pfd[1], words_in, sizeof(words_in)) != sizeof(words_in))
			case_fail("pipe: %s", strerror(errno));
		ssize_t got = read(pfd[0], &m[at], sizeof(words_in));
		if (got != sizeof(words_in))
			case_fail("read(2) into the region: %zd (%s)", got, strerror(errno));
		close(pfd[0]);
		close(pfd[1]);
	}
	pid_t child = fork();
	if (child < 0)
		case_fail("fork: %s", strerror(errno));
	if (child == 0) {
		for (size_t i = 0; i < words; i++)
			if (m[i] != word(i))
				_exit(3);
		_exit(0);
	}
	/* munmap 8..12 MiB, fresh memory there */
	unsigned char *b = (unsigned char *)m + 8 * MIB;
	if (munmap(b, 4 * MIB) != 0)
		case_fail("munmap: %s", strerror(errno));
	if (mmap(b, 4 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != b)
		case_fail("mmap fixed: %s", strerror(errno));
	/* drop 16..20 MiB */
	unsigned char *c = (unsigned char *)m + 16 * MIB;
	if (madvise(c, 4 * MIB, MADV_DONTNEED) != 0)
		case_fail("madvise: %s", strerror(errno));
	/* move 24..28 MiB elsewhere */
	void *d = mremap((unsigned char *)m + 24 * MIB, 4 * MIB, 4 * MIB, MREMAP_MAYMOVE | MREMAP_FIXED,
			 (unsigned char *)mmap(NULL, 4 * MIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
	if (d == MAP_FAILED)
		case_fail("mremap: %s", strerror(errno));
	own_uffd();

	check_zero(b, 4 * MIB, "fresh mapping over a munmapped range");
	check_zero(c, 4 * MIB, "MADV_DONTNEED range");
	for (size_t i = 0; i < 4 * MIB / 8; i++) {
		size_t k = 24 * MIB / 8 + i;
		if (((uint64_t *)d)[i] != word(k))
			case_fail("mremapped range: word %zu is %#llx, want %#llx", i,
				  (unsigned long long)((uint64_t *)d)[i], (unsigned long long)word(k));
	}
	check(m, 0, 8 * MIB / 8, "0..8 MiB");
	check(m, 12 * MIB / 8, 16 * MIB / 8, "12..16 MiB");
	check(m, 20 * MIB / 8, 24 * MIB / 8, "20..24 MiB");
	check(m, 28 * MIB / 8, words, "28 MiB..end");
	for (size_t i = 0; i < 32768; i++)
		if (heap[i] != word(i + 7))
			case_fail("heap word %zu", i);
	for (size_t i = 0; i < 512; i++)
		if (stack[i] != word(i + 11))
			case_fail("stack word %zu", i);
	int st;
	if (waitpid(child, &st, 0) != child)
		case_fail("waitpid: %s", strerror(errno));
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		case_fail("the fork child found the region wrong (status %#x)", st);
	case_pass();
}

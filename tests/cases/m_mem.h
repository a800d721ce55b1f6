/*
 * m_mem.h - helpers shared by the memory cases (m_*.c): a canonical text of
 * the VMAs of an address range (maps line and VmFlags of each), a SIGSEGV
 * probe, and a data pattern.  Include after case.h.
 */
#ifndef CTRCR_M_MEM_H
#define CTRCR_M_MEM_H

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>

/* CHECK fails the case (case_fail exits) unless cond holds. */
#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

/* Deterministic pattern: never-zero 64-bit words from a seed and index. */
static inline uint64_t m_word(uint64_t seed, size_t i)
{
	uint64_t x = (seed << 32) ^ (i * 0x9E3779B97F4A7C15ull) ^ 0x5bd1e995;
	x ^= x >> 29;
	return x | 1;
}

static inline void m_fill(void *p, size_t len, uint64_t seed)
{
	uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i++)
		w[i] = m_word(seed, i);
}

/* 1 if p holds len bytes of the pattern seed. */
static inline int m_same(const void *p, size_t len, uint64_t seed)
{
	const uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i++)
		if (w[i] != m_word(seed, i))
			return 0;
	return 1;
}

static inline int m_zero(const void *p, size_t len)
{
	const uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i++)
		if (w[i])
			return 0;
	return 1;
}

/* ---- SIGSEGV probe ---- */

static sigjmp_buf m_probe_env;

static void m_on_segv(int sig)
{
	(void)sig;
	siglongjmp(m_probe_env, 1);
}

/* 1 if reading (write=0) or writing (write=1) *p faults with SIGSEGV (or
 * SIGBUS). */
static inline int m_faults(volatile char *p, int write)
{
	struct sigaction sa = {0}, old, oldbus;
	int hit;

	sa.sa_handler = m_on_segv;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old);
	sigaction(SIGBUS, &sa, &oldbus);
	if (sigsetjmp(m_probe_env, 1) == 0) {
		if (write)
			*p = *p;
		else
			(void)*p;
		hit = 0;
	} else {
		hit = 1;
	}
	sigaction(SIGSEGV, &old, NULL);
	sigaction(SIGBUS, &oldbus, NULL);
	return hit;
}

/* ---- maps + VmFlags text ---- */

/*
 * m_vmas_text returns (malloc'ed) one line per VMA overlapping [lo, hi):
 * "start-end perms offset path | VmFlags" (inode and device left out, a
 * restored memory object has a new inode; "sd" left out, a tracking bit).
 */
static inline char *m_vmas_text(uintptr_t lo, uintptr_t hi)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[4096];
	size_t cap = 1 << 18, len = 0;
	char *out = malloc(cap);
	int in = 0;

	CHECK(f && out, "open /proc/self/smaps: %s", strerror(errno));
	out[0] = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e, off;
		char perms[8];
		int n = 0;
		if (strchr(line, '-') && strchr(line, ' ') &&
		    strchr(line, '-') < strchr(line, ' ') &&
		    sscanf(line, "%lx-%lx %7s %lx %*s %*s %n", &s, &e, perms,
			   &off, &n) >= 4 && n > 0) {
			char *path = line + n;
			path[strcspn(path, "\n")] = 0;
			in = e > lo && s < hi;
			if (in) {
				CHECK(len + 512 + strlen(path) < cap,
				      "m_vmas_text: too many lines");
				len += sprintf(out + len, "%lx-%lx %s %08lx %s |",
					       s, e, perms, off, path);
			}
			continue;
		}
		if (!in || strncmp(line, "VmFlags:", 8) != 0)
			continue;
		for (char *tok = strtok(line + 8, " \n"); tok;
		     tok = strtok(NULL, " \n")) {
			if (strcmp(tok, "sd") == 0)
				continue;
			len += sprintf(out + len, " %s", tok);
		}
		out[len++] = '\n';
		out[len] = 0;
	}
	fclose(f);
	return out;
}

/* VmFlags of the VMA containing addr (a line of m_vmas_text, after "|"). */
static inline const char *m_flags_at(const void *addr)
{
	static char buf[512];
	char *t = m_vmas_text((uintptr_t)addr, (uintptr_t)addr + 1);
	char *bar = strchr(t, '|');
	snprintf(buf, sizeof buf, "%s", bar ? bar + 1 : "");
	buf[strcspn(buf, "\n")] = 0;
	free(t);
	return buf;
}

/* 1 if the VmFlags of the VMA containing addr include fl. */
static inline int m_has_flag(const void *addr, const char *fl)
{
	const char *f = m_flags_at(addr);
	size_t n = strlen(fl);
	for (const char *p = f; (p = strstr(p, fl)); p++)
		if ((p == f || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0))
			return 1;
	return 0;
}

/* ---- files ---- */

static inline void m_write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	CHECK(fd >= 0, "create %s: %s", path, strerror(errno));
	CHECK(write(fd, data, len) == (ssize_t)len, "write %s", path);
	close(fd);
}

/* m_read_file returns the (malloc'ed, NUL-terminated) contents of path. */
static inline char *m_read_file(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t cap = 1 << 20;
	char *buf = malloc(cap);
	CHECK(fd >= 0 && buf, "open %s: %s", path, strerror(errno));
	ssize_t n = read(fd, buf, cap - 1);
	CHECK(n >= 0 && n < (ssize_t)cap - 1, "read %s", path);
	buf[n] = 0;
	close(fd);
	return buf;
}

/* m_first_diff names the first line where a and b differ. */
static inline const char *m_first_diff(const char *a, const char *b)
{
	static char msg[1200];
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

/* m_save_and_compare: before ready (save=1) writes text to WORKDIR/name;
 * after go (save=0) compares text with it and fails naming the first
 * differing line. */
static inline void m_save_or_compare(const char *name, const char *text,
				     int save)
{
	char path[PATH_MAX + 64];
	snprintf(path, sizeof path, "%s/%s", case_workdir, name);
	if (save) {
		m_write_file(path, text, strlen(text));
		return;
	}
	char *before = m_read_file(path);
	CHECK(strcmp(before, text) == 0, "%s differ: %s", name,
	      m_first_diff(before, text));
	free(before);
}

#endif /* CTRCR_M_MEM_H */

/*
 * t_tree.h - helpers shared by the process-tree cases (tests/cases/t_*.c).
 *
 * Conventions of the tree cases, on top of case.h:
 *   - the case root sets the whole tree up, records every expected value
 *     (pids, ppids, sids, pgids, checksums) and, right before "ready",
 *     writes WORKDIR/tree.before: one line "pid ppid pgid sid" per process
 *     of the tree, root first (tt_write_tree), which the Go test compares
 *     with /proc before the first dump and after the last restore;
 *   - children poll WORKDIR/go like the root; after go they check their own
 *     state and report to the root (pipes created before the fork) or exit
 *     with an agreed status; a child that finds a problem prints
 *     "FAIL: ..." and exits 1 (case_fail), so the root sees a wrong status;
 *   - the root reaps every child with its expected status, checks that it
 *     has no child left and prints the single last line PASS/FAIL;
 *   - every wait is bounded (TT_TIMEOUT_MS) so that a broken restore ends in
 *     FAIL rather than a hang;
 *   - the root stays single-threaded (the harness waits for the root and its
 *     threads to be back after each restore).
 */
#ifndef CTRCR_T_TREE_H
#define CTRCR_T_TREE_H

#include "case.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

/* CHECK fails the calling process (case_fail exits 1) unless cond holds. */
#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

/* Bound of any wait for another process of the tree. */
#define TT_TIMEOUT_MS 20000

/* A process as /proc/PID/stat shows it. */
struct tt_stat {
	char state;    /* R, S, D, T, t, Z, ... */
	int ppid;
	int pgrp;
	int sid;
	int exit_code; /* field 52: the wait status word of a zombie */
};

/* tt_stat reads /proc/pid/stat; returns 0, or -1 when pid does not exist. */
static inline int tt_stat(pid_t pid, struct tt_stat *st)
{
	char path[64], buf[1024];
	long n;
	char *p, *f[64];
	int nf = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	n = case_read_file(path, buf, sizeof(buf));
	if (n <= 0)
		return -1;
	p = strrchr(buf, ')');
	if (!p)
		return -1;
	/* fields from 3 (state) on, space separated */
	for (p = strtok(p + 1, " \n"); p && nf < 64; p = strtok(NULL, " \n"))
		f[nf++] = p;
	if (nf < 50)
		return -1;
	st->state = f[0][0];
	st->ppid = atoi(f[1]);
	st->pgrp = atoi(f[2]);
	st->sid = atoi(f[3]);
	st->exit_code = atoi(f[49]); /* field 52 */
	return 0;
}

/* tt_wait_state waits until pid is in state want (e.g. 'Z', 'T'). */
static inline void tt_wait_state(pid_t pid, char want, const char *what)
{
	struct tt_stat st = { 0 };
	long long end = case_now() + TT_TIMEOUT_MS * 1000000LL;

	while (case_now() < end) {
		if (tt_stat(pid, &st) == 0 && st.state == want)
			return;
		case_sleep_ms(5);
	}
	case_fail("%s (pid %d): state %c, want %c", what, (int)pid,
		  st.state ? st.state : '?', want);
}

/* tt_write_tree writes WORKDIR/tree.before ("pid ppid pgid sid" per line,
 * from /proc) for the n pids, atomically (write + rename). */
static inline void tt_write_tree(const pid_t *pids, int n)
{
	char tmp[PATH_MAX + 32], path[PATH_MAX + 32];
	struct tt_stat st;
	FILE *f;
	int i;

	snprintf(tmp, sizeof(tmp), "%s/tree.before.tmp", case_workdir);
	snprintf(path, sizeof(path), "%s/tree.before", case_workdir);
	f = fopen(tmp, "we");
	CHECK(f, "create %s: %s", tmp, strerror(errno));
	for (i = 0; i < n; i++) {
		CHECK(tt_stat(pids[i], &st) == 0, "tree: pid %d: no /proc entry",
		      (int)pids[i]);
		fprintf(f, "%d %d %d %d\n", (int)pids[i], st.ppid, st.pgrp,
			st.sid);
	}
	CHECK(fclose(f) == 0, "write %s: %s", tmp, strerror(errno));
	CHECK(rename(tmp, path) == 0, "rename %s: %s", tmp, strerror(errno));
}

/* tt_read_full reads exactly len bytes from fd within TT_TIMEOUT_MS. */
static inline void tt_read_full(int fd, void *buf, size_t len, const char *what)
{
	char *p = buf;
	long long end = case_now() + TT_TIMEOUT_MS * 1000000LL;

	while (len > 0) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		long long left = (end - case_now()) / 1000000LL;
		ssize_t n;
		int r;

		CHECK(left > 0, "%s: timed out with %zu bytes missing", what, len);
		r = poll(&pfd, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		CHECK(r >= 0, "%s: poll: %s", what, strerror(errno));
		if (r == 0)
			continue;
		n = read(fd, p, len);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		CHECK(n >= 0, "%s: read: %s", what, strerror(errno));
		CHECK(n > 0, "%s: EOF with %zu bytes missing", what, len);
		p += n;
		len -= (size_t)n;
	}
}

/* tt_write_full writes len bytes to fd (blocking fd). */
static inline void tt_write_full(int fd, const void *buf, size_t len,
				 const char *what)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		CHECK(n > 0, "%s: write: %s", what, strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

/* tt_wait waits (bounded) for the child pid to end and returns its status. */
static inline int tt_wait(pid_t pid, const char *what)
{
	long long end = case_now() + TT_TIMEOUT_MS * 1000000LL;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return status;
		CHECK(r == 0, "%s: waitpid %d: %s", what, (int)pid,
		      r < 0 ? strerror(errno) : "another pid");
		CHECK(case_now() < end, "%s (pid %d) did not end", what,
		      (int)pid);
		case_sleep_ms(5);
	}
}

/* tt_expect_exit reaps pid and requires exit status code. */
static inline void tt_expect_exit(pid_t pid, int code, const char *what)
{
	int st = tt_wait(pid, what);

	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == code,
	      "%s (pid %d) ended with status %#x, want exit %d", what, (int)pid,
	      st, code);
}

/* tt_no_children requires that the caller has no child left (not even a
 * zombie or a stopped one). */
static inline void tt_no_children(void)
{
	int st;
	pid_t r = waitpid(-1, &st, WNOHANG | WUNTRACED | WCONTINUED);

	CHECK(r < 0 && errno == ECHILD,
	      "an unexpected child is left: waitpid(-1) = %d (status %#x)",
	      (int)r, r > 0 ? st : 0);
}

/* tt_fork forks, failing the case on error. */
static inline pid_t tt_fork(void)
{
	pid_t pid = fork();

	CHECK(pid >= 0, "fork: %s", strerror(errno));
	return pid;
}

/* tt_pipe creates a pipe (not close-on-exec: plain fds shared by the tree). */
static inline void tt_pipe(int p[2])
{
	CHECK(pipe(p) == 0, "pipe: %s", strerror(errno));
}

/* Deterministic data: splitmix64. */
static inline uint64_t tt_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* tt_fill writes bytes [off, off+len) of stream s into buf. */
static inline void tt_fill(uint64_t s, uint64_t off, void *buf, size_t len)
{
	unsigned char *b = buf;
	size_t i = 0;

	while (i < len) {
		uint64_t pos = off + i;
		uint64_t w = tt_mix(s ^ (pos >> 3) * 0x100000001b3ULL);
		unsigned k;

		for (k = pos & 7; k < 8 && i < len; k++, i++)
			b[i] = (unsigned char)(w >> (k * 8));
	}
}

/* tt_find_diff returns the index of the first byte of buf that differs from
 * stream s at offset off, or -1. */
static inline long tt_find_diff(uint64_t s, uint64_t off, const void *buf,
				size_t len)
{
	const unsigned char *b = buf;
	unsigned char tmp[4096];
	size_t done = 0;

	while (done < len) {
		size_t n = len - done < sizeof(tmp) ? len - done : sizeof(tmp);
		size_t i;

		tt_fill(s, off + done, tmp, n);
		if (memcmp(tmp, b + done, n) != 0)
			for (i = 0; i < n; i++)
				if (tmp[i] != b[done + i])
					return (long)(done + i);
		done += n;
	}
	return -1;
}

/* FNV-1a 64 over a buffer, continuing from h (start with TT_FNV0). */
#define TT_FNV0 0xcbf29ce484222325ULL
static inline uint64_t tt_fnv(uint64_t h, const void *buf, size_t len)
{
	const unsigned char *b = buf;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= b[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* tt_block_signal blocks sig in the caller (inherited by later forks). */
static inline void tt_block_signal(int sig)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, sig);
	CHECK(sigprocmask(SIG_BLOCK, &set, NULL) == 0, "sigprocmask: %s",
	      strerror(errno));
}

/* tt_wait_signal waits (bounded) for the blocked signal sig; returns 0 when
 * it came, -1 on timeout. */
static inline int tt_wait_signal(int sig)
{
	sigset_t set;
	struct timespec ts = { TT_TIMEOUT_MS / 1000, 0 };

	sigemptyset(&set);
	sigaddset(&set, sig);
	for (;;) {
		int r = sigtimedwait(&set, NULL, &ts);

		if (r == sig)
			return 0;
		if (r < 0 && errno == EINTR)
			continue;
		return -1;
	}
}

#endif /* CTRCR_T_TREE_H */

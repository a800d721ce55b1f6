/*
 * case.h - shared helpers for the ctr-cr end-to-end C/R cases.
 *
 * Protocol (driven by tests/harness_test.go):
 *   - argv[1] is the case work directory (absolute path); cwd is set to it;
 *     stdout/stderr go to WORKDIR/out, stdin is /dev/null.
 *   - the case sets its state up, then prints "ready" (case_ready());
 *   - the harness dumps/restores it, then creates WORKDIR/go;
 *   - the case waits for that file (case_wait_go() / case_go_requested()),
 *     verifies its state from inside and ends with "PASS" (exit 0) or
 *     "FAIL: <reason>" (exit 1) as its last output line.
 *
 * Header-only: every case is a single .c file that includes this first.
 */
#ifndef CTRCR_CASE_H
#define CTRCR_CASE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Absolute path of the work directory and of its "go" file.  The go file is
 * polled by absolute path so that cases may chdir elsewhere. */
static char case_workdir[PATH_MAX];
static char case_gofile[PATH_MAX + 8];

static inline void case_init(int argc, char **argv)
{
	if (argc < 2 || argv[1][0] != '/') {
		fprintf(stderr, "usage: %s /abs/workdir\n", argv[0]);
		exit(2);
	}
	if (strlen(argv[1]) >= sizeof(case_workdir)) {
		fprintf(stderr, "FAIL: workdir path too long\n");
		exit(2);
	}
	strcpy(case_workdir, argv[1]);
	snprintf(case_gofile, sizeof(case_gofile), "%s/go", case_workdir);
	if (chdir(case_workdir) != 0) {
		fprintf(stdout, "FAIL: chdir %s: %s\n", case_workdir,
			strerror(errno));
		fflush(stdout);
		exit(1);
	}
	/* out is a regular file: make stdout line buffered so that lines land
	 * in order with stderr and are complete before any dump. */
	setvbuf(stdout, NULL, _IOLBF, 0);
}

/* case_log prints an informational line (never the last line). */
__attribute__((format(printf, 1, 2))) static inline void
case_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	flockfile(stdout);
	fputs("log: ", stdout);
	vfprintf(stdout, fmt, ap);
	fputc('\n', stdout);
	fflush(stdout);
	funlockfile(stdout);
	va_end(ap);
}

/* case_ready announces that the state is set up; the harness may dump now. */
static inline void case_ready(void)
{
	fputs("ready\n", stdout);
	fflush(stdout);
}

/* case_go_requested reports whether WORKDIR/go exists (async-signal-safe,
 * touches no memory but the path). */
static inline int case_go_requested(void)
{
	return access(case_gofile, F_OK) == 0;
}

/* case_wait_go polls for WORKDIR/go every 10 ms. */
static inline void case_wait_go(void)
{
	const struct timespec ts = { 0, 10 * 1000 * 1000 };

	while (!case_go_requested())
		nanosleep(&ts, NULL);
}

/* case_fail reports a failure and terminates the whole process (all
 * threads) with status 1.  Safe to call from any thread. */
__attribute__((format(printf, 1, 2), noreturn)) static inline void
case_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	flockfile(stdout);
	fputs("FAIL: ", stdout);
	vfprintf(stdout, fmt, ap);
	fputc('\n', stdout);
	fflush(stdout);
	va_end(ap);
	fflush(stderr);
	_exit(1); /* no atexit/destructors: other threads may still run */
}

/* case_pass reports success and terminates the process with status 0. */
__attribute__((noreturn)) static inline void case_pass(void)
{
	flockfile(stdout);
	fputs("PASS\n", stdout);
	fflush(stdout);
	fflush(stderr);
	_exit(0);
}

/* Small helpers used by several cases. */

/* case_now returns CLOCK_MONOTONIC in nanoseconds. */
static inline long long case_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* case_sleep_ms sleeps at least ms milliseconds, resuming after signals. */
static inline void case_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* case_read_file reads up to size-1 bytes of path into buf (NUL
 * terminated); returns the length or -1. */
static inline long case_read_file(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, size - 1, f);
	buf[n] = 0;
	fclose(f);
	return (long)n;
}

#endif /* CTRCR_CASE_H */

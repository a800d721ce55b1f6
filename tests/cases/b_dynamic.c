/*
 * b_dynamic: a dynamically linked PIE that leans on libc (stdio, malloc,
 * qsort, strftime/localtime, dlopen) keeps running correctly: the dynamic
 * loader's state, libc's internal state and a dlopen'ed library all survive.
 *
 * Setup: dlopen("libm.so.6"), dlsym cos; record cos(0.5) and the
 * "start-end perms offset path" lines of ld-linux, libc and libm (saved to
 * WORKDIR/maps.before). Then, until "go", loop: bump a counter (kept in a
 * global and in a malloc'ed copy), format/parse numbers, qsort an array,
 * strftime the time, call cos through the pointer.
 *
 * After "go": counter continued from its value at "ready" (not reset, both
 * copies agree), the dlsym'ed cos gives the same bits, a fresh dlsym (sin)
 * works, pid/tid, /proc/self/exe and /proc/self/cmdline as before, the
 * library lines of /proc/self/maps are equal to maps.before, and the loop
 * body still works.
 */
#define _GNU_SOURCE
#include "case.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sys/syscall.h>

/* CHECK fails the case (case_fail exits) unless cond holds. */
#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#define NSORT 512

static volatile unsigned long counter;
static unsigned long *counter_copy; /* on the malloc heap */
static double (*cos_fn)(double);
static int sort_buf[NSORT];

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

/* One iteration of libc-heavy work; fails the case on a wrong result. */
static void work(void)
{
	char buf[128], tbuf[64];
	unsigned long c = ++counter;

	++*counter_copy;
	CHECK(*counter_copy == c, "counter copies disagree: %lu vs %lu",
	      *counter_copy, c);

	/* stdio formatting and parsing */
	int n = snprintf(buf, sizeof buf, "%lu %.3f %s", c, (double)c / 8,
			 "x");
	unsigned long back;
	double d;
	CHECK(n > 0 && sscanf(buf, "%lu %lf", &back, &d) == 2 && back == c &&
		      d == (double)c / 8,
	      "snprintf/sscanf round trip failed: %s", buf);

	/* malloc + qsort */
	int *a = malloc(NSORT * sizeof *a);
	CHECK(a, "malloc");
	for (int i = 0; i < NSORT; i++)
		a[i] = (int)((c * 2654435761u + i * 40503u) % 100000);
	qsort(a, NSORT, sizeof *a, cmp_int);
	for (int i = 1; i < NSORT; i++)
		CHECK(a[i - 1] <= a[i], "qsort result unsorted");
	memcpy(sort_buf, a, sizeof sort_buf);
	free(a);

	/* time formatting (locale/tz state of libc) */
	time_t now = time(NULL);
	struct tm tm;
	CHECK(localtime_r(&now, &tm), "localtime_r");
	CHECK(strftime(tbuf, sizeof tbuf, "%Y-%m-%d %H:%M:%S", &tm) == 19,
	      "strftime: '%s'", tbuf);

	/* the dlsym'ed function */
	double v = cos_fn((double)(c % 100) / 100);
	CHECK(v > 0.5 && v <= 1.0, "cos gave %f", v);
}

/* Library lines of /proc/self/maps: ld-linux, libc, libm. */
static char *lib_maps(void)
{
	static char out[8192];
	char line[PATH_MAX + 128];
	size_t len = 0;
	FILE *f = fopen("/proc/self/maps", "r");

	CHECK(f, "open maps");
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e, off;
		char perms[8];
		int n = 0;
		if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %n", &s, &e, perms,
			   &off, &n) < 4 || n == 0)
			continue;
		char *path = line + n;
		path[strcspn(path, "\n")] = 0;
		const char *base = strrchr(path, '/');
		if (!base || (strncmp(base, "/ld-linux", 9) &&
			      strncmp(base, "/libc.so", 8) &&
			      strncmp(base, "/libm.so", 8)))
			continue;
		len += snprintf(out + len, sizeof out - len, "%lx-%lx %s %lx %s\n",
				s, e, perms, off, path);
	}
	fclose(f);
	return out;
}

int main(int argc, char **argv)
{
	char path[PATH_MAX + 32], saved[8192];

	case_init(argc, argv);

	void *libm = dlopen("libm.so.6", RTLD_NOW);
	CHECK(libm, "dlopen libm.so.6: %s", dlerror());
	cos_fn = (double (*)(double))dlsym(libm, "cos");
	CHECK(cos_fn, "dlsym cos: %s", dlerror());
	double cos_before = cos_fn(0.5);
	CHECK(fabs(cos_before - 0.8775825618903728) < 1e-12, "cos(0.5) = %.17g",
	      cos_before);

	counter_copy = malloc(sizeof *counter_copy);
	CHECK(counter_copy, "malloc");
	*counter_copy = 0;
	for (int i = 0; i < 100; i++)
		work();

	char *maps = lib_maps();
	CHECK(strstr(maps, "/ld-linux") && strstr(maps, "/libc.so") &&
		      strstr(maps, "/libm.so"),
	      "setup: ld-linux/libc/libm not all in maps:\n%s", maps);
	snprintf(path, sizeof path, "%s/maps.before", case_workdir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0 && write(fd, maps, strlen(maps)) == (ssize_t)strlen(maps),
	      "write maps.before");
	close(fd);

	pid_t pid = getpid(), tid = (pid_t)syscall(SYS_gettid);
	char exe[PATH_MAX], exe_now[PATH_MAX], cmdline[4096], cmdline_now[4096];
	ssize_t exe_len = readlink("/proc/self/exe", exe, sizeof exe);
	CHECK(exe_len > 0, "readlink /proc/self/exe: %s", strerror(errno));
	long cmd_len = case_read_file("/proc/self/cmdline", cmdline, sizeof cmdline);
	CHECK(cmd_len > 0, "read /proc/self/cmdline");
	printf("log: pid %d, %lu iterations before ready, libm at %p\n", pid,
	       counter, (void *)cos_fn);
	unsigned long at_ready = counter;
	case_ready();

	/* keep working until "go" (dumps and restores happen meanwhile) */
	unsigned long loops = 0;
	while (!case_go_requested()) {
		work();
		loops++;
		if (loops % 16 == 0)
			case_sleep_ms(1);
	}

	/* the counter continued from where it was */
	CHECK(counter == at_ready + loops, "counter %lu, expected %lu + %lu",
	      counter, at_ready, loops);
	CHECK(*counter_copy == counter, "heap counter %lu vs %lu",
	      *counter_copy, counter);

	CHECK(getpid() == pid, "pid %d, was %d", getpid(), pid);
	CHECK(syscall(SYS_gettid) == tid, "tid changed");
	CHECK(readlink("/proc/self/exe", exe_now, sizeof exe_now) == exe_len &&
		      !memcmp(exe, exe_now, exe_len),
	      "/proc/self/exe is %.*s, was %.*s", (int)exe_len, exe_now,
	      (int)exe_len, exe);
	CHECK(case_read_file("/proc/self/cmdline", cmdline_now,
			     sizeof cmdline_now) == cmd_len &&
		      !memcmp(cmdline, cmdline_now, cmd_len),
	      "/proc/self/cmdline changed: %s", cmdline_now);

	double c = cos_fn(0.5);
	CHECK(memcmp(&c, &cos_before, sizeof c) == 0, "cos(0.5) = %.17g, was %.17g",
	      c, cos_before);
	double (*sin_fn)(double) = (double (*)(double))dlsym(libm, "sin");
	CHECK(sin_fn, "dlsym sin after restore: %s", dlerror());
	CHECK(fabs(sin_fn(0.5) - 0.479425538604203) < 1e-12, "sin(0.5) = %.17g",
	      sin_fn(0.5));
	void *again = dlopen("libm.so.6", RTLD_NOW | RTLD_NOLOAD);
	CHECK(again == libm, "dlopen(RTLD_NOLOAD) gave %p, expected %p", again,
	      libm);

	snprintf(path, sizeof path, "%s/maps.before", case_workdir);
	CHECK(case_read_file(path, saved, sizeof saved) > 0, "read maps.before");
	maps = lib_maps();
	CHECK(strcmp(saved, maps) == 0, "library mappings differ:\nbefore:\n%snow:\n%s",
	      saved, maps);

	for (int i = 0; i < 1000; i++)
		work();
	printf("log: %lu iterations between ready and go, %lu in total\n",
	       loops, counter);
	case_pass();
}

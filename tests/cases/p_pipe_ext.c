/*
 * p_pipe_ext: fd 3 is the write end of a pipe whose read end the test holds
 * (a daemon whose output goes to a logger). Each restore hands in a fresh
 * pipe (--inherit-fd fd[3]:pipe:[INO]).
 *
 * Before ready the case writes records 0..99 to fd 3 (left queued: the
 * test reads them from the first pipe afterwards). After go it checks that
 * fd 3 is still a pipe's write end with the same F_GETFL, writes records
 * 100..199 and closes it. The test then requires the pipes, read in order,
 * to hold records 0..199 exactly once, in order.
 */
#include "case.h"

#include <fcntl.h>
#include <sys/stat.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

static void records(int from, int to)
{
	char line[32];
	int i, n;

	for (i = from; i < to; i++) {
		n = snprintf(line, sizeof(line), "rec %05d\n", i);
		CHECK(write(3, line, (size_t)n) == n, "write record %d: %s", i,
		      strerror(errno));
	}
}

static void check_pipe(int want_flags)
{
	struct stat st;
	int fl = fcntl(3, F_GETFL);

	CHECK(fstat(3, &st) == 0 && S_ISFIFO(st.st_mode), "fd 3 is not a pipe");
	CHECK(fl == want_flags, "fd 3: flags %#o, want %#o", fl, want_flags);
}

int main(int argc, char **argv)
{
	int flags;

	case_init(argc, argv);
	flags = fcntl(3, F_GETFL);
	CHECK((flags & O_ACCMODE) == O_WRONLY, "fd 3: flags %#o, want O_WRONLY",
	      flags);
	check_pipe(flags);
	records(0, 100);
	case_ready();

	case_wait_go();
	check_pipe(flags);
	records(100, 200);
	close(3);
	case_pass();
}

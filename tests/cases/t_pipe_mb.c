/*
 * t_pipe_mb: a producer -> consumer pipe with megabytes in flight.
 *
 *   R   case root
 *   |-- P   producer: writes a 64 MiB deterministic stream (tt_fill, seed
 *   |       SEED) into the pipe in 64 KiB writes, then exits 0
 *   `-- C   consumer: reads 4 KiB every 20 ms until go (so the pipe stays
 *           full: P is blocked in write with ~1 MiB queued at every dump),
 *           then at full speed to EOF; checks every byte against the stream
 *           and keeps an FNV-1a checksum
 *
 * The pipe is sized 1 MiB with F_SETPIPE_SZ. R computes the expected
 * checksum before ready, holds a copy of the read end only until the pipe
 * is seen full (FIONREAD), then closes it: at dump time only P and C hold
 * the pipe. After go C reports (over a second pipe) the total length, the
 * checksum, the offset of the first wrong byte (-1 if none) and
 * F_GETPIPE_SZ; R requires 64 MiB, the expected checksum, no wrong byte,
 * 1 MiB, and P and C exiting 0.
 */
#include "t_tree.h"

#include <sys/ioctl.h>

#define SEED 0x5eed0001c0ffeeULL
#define TOTAL (64ULL << 20)
#define PIPE_SIZE (1 << 20)
#define CHUNK (64 * 1024)

struct result {
	uint64_t total;
	uint64_t sum;
	int64_t bad; /* stream offset of the first wrong byte, or -1 */
	int pipe_size;
};

static void producer(int wfd)
{
	static unsigned char buf[CHUNK];
	uint64_t off;

	for (off = 0; off < TOTAL; off += CHUNK) {
		tt_fill(SEED, off, buf, CHUNK);
		tt_write_full(wfd, buf, CHUNK, "producer");
	}
	close(wfd);
	_exit(0);
}

static void consumer(int rfd, int rep)
{
	static unsigned char buf[256 * 1024];
	struct result res = { 0, TT_FNV0, -1, 0 };
	int fast = 0;

	for (;;) {
		ssize_t n;
		long d;

		if (!fast && case_go_requested())
			fast = 1;
		n = read(rfd, buf, fast ? sizeof(buf) : 4096);
		if (n < 0 && errno == EINTR)
			continue;
		CHECK(n >= 0, "consumer: read: %s", strerror(errno));
		if (n == 0)
			break;
		if (res.bad < 0 && (d = tt_find_diff(SEED, res.total, buf,
						     (size_t)n)) >= 0)
			res.bad = (int64_t)(res.total + (uint64_t)d);
		res.sum = tt_fnv(res.sum, buf, (size_t)n);
		res.total += (uint64_t)n;
		if (!fast)
			case_sleep_ms(20);
	}
	res.pipe_size = fcntl(rfd, F_GETPIPE_SZ);
	tt_write_full(rep, &res, sizeof(res), "consumer: report");
	_exit(0);
}

int main(int argc, char **argv)
{
	static unsigned char buf[CHUNK];
	struct result res;
	uint64_t want = TT_FNV0, off;
	pid_t root, p, c, pids[3];
	int pfd[2], rep[2], queued = 0;
	long long end;

	case_init(argc, argv);
	root = getpid();
	for (off = 0; off < TOTAL; off += CHUNK) {
		tt_fill(SEED, off, buf, CHUNK);
		want = tt_fnv(want, buf, CHUNK);
	}

	tt_pipe(pfd);
	tt_pipe(rep);
	CHECK(fcntl(pfd[1], F_SETPIPE_SZ, PIPE_SIZE) == PIPE_SIZE,
	      "F_SETPIPE_SZ %d: %s", PIPE_SIZE, strerror(errno));
	p = tt_fork();
	if (p == 0) {
		close(pfd[0]);
		close(rep[0]);
		close(rep[1]);
		producer(pfd[1]);
	}
	c = tt_fork();
	if (c == 0) {
		close(pfd[1]);
		close(rep[0]);
		consumer(pfd[0], rep[1]);
	}
	close(pfd[1]);
	close(rep[1]);

	/* Wait for the pipe to be full (P blocked in write), then let go of
	 * our copy of the read end. */
	end = case_now() + TT_TIMEOUT_MS * 1000000LL;
	while (queued < PIPE_SIZE - CHUNK) {
		CHECK(ioctl(pfd[0], FIONREAD, &queued) == 0, "FIONREAD: %s",
		      strerror(errno));
		CHECK(case_now() < end, "the pipe does not fill up (%d bytes)",
		      queued);
		case_sleep_ms(5);
	}
	close(pfd[0]);
	case_log("producer %d, consumer %d, %d bytes queued, checksum %#llx",
		 (int)p, (int)c, queued, (unsigned long long)want);
	pids[0] = root;
	pids[1] = p;
	pids[2] = c;
	tt_write_tree(pids, 3);
	case_ready();

	case_wait_go();
	tt_read_full(rep[0], &res, sizeof(res), "reading the consumer's result");
	CHECK(res.bad < 0, "byte %lld of the stream is wrong", (long long)res.bad);
	CHECK(res.total == TOTAL, "consumer got %llu bytes, want %llu",
	      (unsigned long long)res.total, (unsigned long long)TOTAL);
	CHECK(res.sum == want, "checksum %#llx, want %#llx",
	      (unsigned long long)res.sum, (unsigned long long)want);
	CHECK(res.pipe_size == PIPE_SIZE, "pipe size %d, want %d", res.pipe_size,
	      PIPE_SIZE);
	tt_expect_exit(p, 0, "producer");
	tt_expect_exit(c, 0, "consumer");
	tt_no_children();
	case_pass();
}

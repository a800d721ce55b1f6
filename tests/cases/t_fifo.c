/*
 * t_fifo: a FIFO (WORKDIR/fifo) opened by path by two processes, with bytes
 * queued in it at dump time.
 *
 *   R   case root: mkfifo, coordinates
 *   |-- W   open(fifo, O_WRONLY); writes QUEUED bytes (stream offsets
 *   |       [0, QUEUED)) before ready; after go, on R's SIGUSR1, writes
 *   |       NEWER more bytes ([QUEUED, QUEUED+NEWER)), closes, exits 0
 *   `-- D   open(fifo, O_RDONLY); reads nothing before go
 *
 * Before ready D sees FIONREAD == QUEUED and both report the FIFO's inode.
 * After go D checks that its fd is still the FIFO at WORKDIR/fifo (same
 * inode, O_RDONLY), that exactly QUEUED bytes are queued, reads them and
 * checks them, tells R (which sends W SIGUSR1), then reads to EOF: exactly
 * the NEWER new bytes. W checks its fd the same way (O_WRONLY). Both exit 0.
 */
#include "t_tree.h"

#include <sys/ioctl.h>

#define SEED 0xf1f0f1f0ULL
#define QUEUED 3000
#define NEWER 5000

struct report {
	int who; /* 0 W, 1 D */
	int phase;
	uint64_t ino;
	int queued;
};

static char fifo_path[PATH_MAX + 8];

/* check_fd requires fd to be the FIFO at fifo_path, open with accmode. */
static uint64_t check_fd(int fd, int accmode, const char *who)
{
	struct stat a, b;
	int fl = fcntl(fd, F_GETFL);

	CHECK(fstat(fd, &a) == 0 && stat(fifo_path, &b) == 0, "%s: stat: %s",
	      who, strerror(errno));
	CHECK(S_ISFIFO(a.st_mode) && a.st_ino == b.st_ino && a.st_dev == b.st_dev,
	      "%s: fd %d is not the FIFO %s (ino %llu vs %llu)", who, fd,
	      fifo_path, (unsigned long long)a.st_ino,
	      (unsigned long long)b.st_ino);
	CHECK(fl >= 0 && (fl & O_ACCMODE) == accmode, "%s: flags %#x", who, fl);
	return (uint64_t)a.st_ino;
}

static int queued_in(int fd)
{
	int n = -1;

	CHECK(ioctl(fd, FIONREAD, &n) == 0, "FIONREAD: %s", strerror(errno));
	return n;
}

static void send_report(int rep, int who, int phase, uint64_t ino, int queued)
{
	struct report r = { who, phase, ino, queued };

	tt_write_full(rep, &r, sizeof(r), "report");
}

static __attribute__((noreturn)) void writer(int rep)
{
	unsigned char buf[QUEUED + NEWER];
	uint64_t ino;
	int fd = open(fifo_path, O_WRONLY);

	CHECK(fd >= 0, "W: open %s: %s", fifo_path, strerror(errno));
	ino = check_fd(fd, O_WRONLY, "W");
	tt_fill(SEED, 0, buf, sizeof(buf));
	tt_write_full(fd, buf, QUEUED, "W: queued bytes");
	send_report(rep, 0, 1, ino, 0);
	case_wait_go();
	CHECK(check_fd(fd, O_WRONLY, "W after restore") == ino,
	      "W: the FIFO changed inode");
	CHECK(tt_wait_signal(SIGUSR1) == 0, "W: no SIGUSR1 after go");
	tt_write_full(fd, buf + QUEUED, NEWER, "W: new bytes");
	close(fd);
	_exit(0);
}

static __attribute__((noreturn)) void reader(int rep)
{
	unsigned char buf[QUEUED + NEWER + 1];
	long long end = case_now() + TT_TIMEOUT_MS * 1000000LL;
	uint64_t ino;
	long d;
	int fd = open(fifo_path, O_RDONLY), n;

	CHECK(fd >= 0, "D: open %s: %s", fifo_path, strerror(errno));
	ino = check_fd(fd, O_RDONLY, "D");
	while ((n = queued_in(fd)) < QUEUED) {
		CHECK(case_now() < end, "D: only %d bytes arrive", n);
		case_sleep_ms(2);
	}
	CHECK(n == QUEUED, "D: %d bytes queued, want %d", n, QUEUED);
	send_report(rep, 1, 1, ino, n);

	case_wait_go();
	CHECK(check_fd(fd, O_RDONLY, "D after restore") == ino,
	      "D: the FIFO changed inode");
	n = queued_in(fd);
	CHECK(n == QUEUED, "D: %d bytes queued after restore, want %d", n,
	      QUEUED);
	tt_read_full(fd, buf, QUEUED, "D: queued bytes");
	CHECK((d = tt_find_diff(SEED, 0, buf, QUEUED)) < 0,
	      "D: queued byte %ld is wrong", d);
	CHECK(queued_in(fd) == 0, "D: more than the queued bytes");
	send_report(rep, 1, 2, ino, 0);

	/* now the new bytes, then EOF */
	tt_read_full(fd, buf + QUEUED, NEWER, "D: new bytes");
	CHECK((d = tt_find_diff(SEED, QUEUED, buf + QUEUED, NEWER)) < 0,
	      "D: new byte %ld is wrong", d);
	/* EOF once W has closed: no other writer may be left (e.g. an fd
	 * the restore kept open). */
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t r;

		CHECK(poll(&pfd, 1, TT_TIMEOUT_MS) == 1,
		      "D: no EOF after the new bytes (another writer?)");
		r = read(fd, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		CHECK(r == 0, "D: read after the new bytes: %zd (%s), want EOF",
		      r, r < 0 ? strerror(errno) : "extra bytes");
		break;
	}
	_exit(0);
}

int main(int argc, char **argv)
{
	struct report r[2], r2;
	pid_t root, w, d, pids[3];
	int rep[2], i;

	case_init(argc, argv);
	root = getpid();
	snprintf(fifo_path, sizeof(fifo_path), "%s/fifo", case_workdir);
	CHECK(mkfifo(fifo_path, 0600) == 0, "mkfifo: %s", strerror(errno));
	tt_pipe(rep);
	tt_block_signal(SIGUSR1);

	w = tt_fork();
	if (w == 0) {
		close(rep[0]);
		writer(rep[1]);
	}
	d = tt_fork();
	if (d == 0) {
		close(rep[0]);
		reader(rep[1]);
	}
	close(rep[1]);
	for (i = 0; i < 2; i++) {
		struct report x;

		tt_read_full(rep[0], &x, sizeof(x), "phase-1 report");
		CHECK(x.phase == 1 && (x.who == 0 || x.who == 1),
		      "bad report %d/%d", x.who, x.phase);
		r[x.who] = x;
	}
	CHECK(r[0].ino == r[1].ino, "W and D opened different FIFOs");
	case_log("W %d, D %d, %d bytes queued in the FIFO", (int)w, (int)d,
		 r[1].queued);
	pids[0] = root;
	pids[1] = w;
	pids[2] = d;
	tt_write_tree(pids, 3);
	case_ready();

	case_wait_go();
	tt_read_full(rep[0], &r2, sizeof(r2), "D's phase-2 report");
	CHECK(r2.who == 1 && r2.phase == 2, "bad report %d/%d", r2.who,
	      r2.phase);
	CHECK(kill(w, SIGUSR1) == 0, "kill W: %s", strerror(errno));
	tt_expect_exit(w, 0, "W");
	tt_expect_exit(d, 0, "D");
	tt_no_children();
	case_pass();
}

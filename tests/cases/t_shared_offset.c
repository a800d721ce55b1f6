/*
 * t_shared_offset: one open file description (one file offset) shared by a
 * parent and its child.
 *
 *   R   case root: opens WORKDIR/shared.dat O_RDWR|O_CREAT|O_TRUNC (no
 *   |   O_APPEND) before the fork
 *   `-- K   inherits the fd
 *
 * Records are RECLEN bytes, "<R|K> <8-digit index> ____\n". Before ready R
 * and K write PRE records each, alternately (token passing over two pipes),
 * so the file is R0 K0 R1 K1 ... and the shared offset is 2*PRE*RECLEN;
 * both see that offset.
 *
 * After go K, then R, check the offset (still 2*PRE*RECLEN, also in
 * /proc/self/fdinfo), then both write POST more records at the same time.
 * With one shared offset every write lands after the previous one, whoever
 * made it; with two offsets (the description restored twice) they overwrite
 * each other. R then requires: offset == size == 2*(PRE+POST)*RECLEN, the
 * file is still WORKDIR/shared.dat (same inode), every record well formed,
 * each writer's indexes 0..PRE+POST-1 each exactly once and in order.
 */
#include "t_tree.h"

#define RECLEN 16
#define PRE 10
#define POST 1000
#define NREC (2 * (PRE + POST))

static int fd;
static char path[PATH_MAX + 16];

static void put(char who, int idx)
{
	char rec[RECLEN + 1];

	snprintf(rec, sizeof(rec), "%c %08d ____\n", who, idx);
	CHECK(write(fd, rec, RECLEN) == RECLEN, "%c: write: %s", who,
	      strerror(errno));
}

/* fdinfo_pos reads "pos:" of fd from /proc/self/fdinfo. */
static long long fdinfo_pos(void)
{
	char p[64], b[512], *s;

	snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd);
	CHECK(case_read_file(p, b, sizeof(b)) > 0, "read %s", p);
	s = strstr(b, "pos:");
	CHECK(s, "no pos in %s", p);
	return atoll(s + 4);
}

static void check_offset(off_t want, const char *who)
{
	off_t off = lseek(fd, 0, SEEK_CUR);

	CHECK(off == want, "%s: offset %lld, want %lld", who, (long long)off,
	      (long long)want);
	CHECK(fdinfo_pos() == want, "%s: fdinfo pos %lld, want %lld", who,
	      fdinfo_pos(), (long long)want);
	CHECK((fcntl(fd, F_GETFL) & (O_ACCMODE | O_APPEND)) == O_RDWR,
	      "%s: file flags %#x", who, fcntl(fd, F_GETFL));
}

int main(int argc, char **argv)
{
	static char data[NREC * RECLEN + 1];
	int r2k[2], k2r[2], i, next[2] = { 0, 0 };
	pid_t root, k, pids[2];
	struct stat st0, st;
	char c = 't';
	ssize_t n;

	case_init(argc, argv);
	root = getpid();
	snprintf(path, sizeof(path), "%s/shared.dat", case_workdir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
	CHECK(fstat(fd, &st0) == 0, "fstat: %s", strerror(errno));
	tt_pipe(r2k);
	tt_pipe(k2r);

	k = tt_fork();
	if (k == 0) {
		close(r2k[1]);
		close(k2r[0]);
		for (i = 0; i < PRE; i++) {
			tt_read_full(r2k[0], &c, 1, "K: token");
			put('K', i);
			tt_write_full(k2r[1], &c, 1, "K: token");
		}
		check_offset(2 * PRE * RECLEN, "K before ready");
		case_wait_go();
		check_offset(2 * PRE * RECLEN, "K after restore");
		tt_write_full(k2r[1], &c, 1, "K: offset checked");
		tt_read_full(r2k[0], &c, 1, "K: R checked the offset");
		for (i = PRE; i < PRE + POST; i++)
			put('K', i);
		_exit(0);
	}
	close(r2k[0]);
	close(k2r[1]);
	for (i = 0; i < PRE; i++) {
		put('R', i);
		tt_write_full(r2k[1], &c, 1, "R: token");
		tt_read_full(k2r[0], &c, 1, "R: token");
	}
	check_offset(2 * PRE * RECLEN, "R before ready");
	pids[0] = root;
	pids[1] = k;
	tt_write_tree(pids, 2);
	case_ready();

	case_wait_go();
	tt_read_full(k2r[0], &c, 1, "K checked the offset");
	check_offset(2 * PRE * RECLEN, "R after restore");
	tt_write_full(r2k[1], &c, 1, "R: offset checked");
	for (i = PRE; i < PRE + POST; i++)
		put('R', i);
	tt_expect_exit(k, 0, "K");

	check_offset(NREC * RECLEN, "R at the end");
	CHECK(stat(path, &st) == 0 && st.st_ino == st0.st_ino &&
		      st.st_size == NREC * RECLEN,
	      "%s: inode %llu (was %llu), size %lld, want %d", path,
	      (unsigned long long)st.st_ino, (unsigned long long)st0.st_ino,
	      (long long)st.st_size, NREC * RECLEN);
	n = pread(fd, data, sizeof(data), 0);
	CHECK(n == NREC * RECLEN, "pread: %zd", n);
	for (i = 0; i < NREC; i++) {
		char *rec = data + i * RECLEN, want[RECLEN + 1];
		int w;

		CHECK(rec[0] == 'R' || rec[0] == 'K', "record %d: %.16s", i, rec);
		w = rec[0] == 'K';
		CHECK(i >= 2 * PRE || w == i % 2,
		      "record %d (before ready) is from %c", i, rec[0]);
		snprintf(want, sizeof(want), "%c %08d ____\n", rec[0], next[w]);
		CHECK(memcmp(rec, want, RECLEN) == 0,
		      "record %d is %.15s, want %.15s (lost or overwritten writes)",
		      i, rec, want);
		next[w]++;
	}
	CHECK(next[0] == PRE + POST && next[1] == PRE + POST,
	      "records: %d from R, %d from K", next[0], next[1]);
	tt_no_children();
	case_pass();
}

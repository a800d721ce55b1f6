/*
 * t_shared_anon: MAP_SHARED|MAP_ANONYMOUS memory shared by a parent and its
 * child, next to a MAP_PRIVATE region whose copies have diverged.
 *
 *   R   case root: maps both regions before the fork
 *   `-- K   child
 *
 * Shared region, 2 MiB: pages [0,128) written by K, pages [128,256) written
 * by R after K's part was read by R, pages [256,512) never touched before
 * ready. Private region, 256 KiB: filled by R before the fork; K overwrites
 * its (copy-on-write) copy with another pattern.
 *
 * Before ready each side checks the other's part, both report the shared
 * region's inode from /proc/self/maps (one shmem object: the same inode).
 *
 * After go each side checks the whole shared region (both parts, the zero
 * pages) and its own private copy. Then R writes a value into a page that
 * was never touched and K must see it; K answers with a value in another
 * untouched page that R must see; K overwrites a word of R's part, which R
 * must see. The two processes still map one object (same inode in maps).
 * K exits 0.
 */
#include "t_tree.h"

#include <sys/mman.h>

#define PAGE 4096
#define SH_LEN (512 * PAGE)
#define PRIV_LEN (64 * PAGE)
#define K_SEED 0x6b6b6b6bULL
#define R_SEED 0x72727272ULL
#define P_SEED 0x70707070ULL  /* private, R's copy */
#define PK_SEED 0x706b706bULL /* private, K's copy */
#define OFF_M1 (300 * PAGE + 8)
#define OFF_M2 (400 * PAGE + 16)
#define OFF_M3 (200 * PAGE + 24)
#define M1 0x1111deadbeef0001ULL
#define M2 0x2222deadbeef0002ULL
#define M3 0x3333deadbeef0003ULL

static unsigned char *sh, *priv;

/* maps_inode returns the inode of the mapping starting at addr. */
static unsigned long maps_inode(void *addr)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	unsigned long start, ino = 0;

	CHECK(f, "open maps: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%*x %*s %*x %*x:%*x %lu", &start, &ino) == 2 &&
		    start == (unsigned long)addr)
			break;
		ino = 0;
	}
	fclose(f);
	CHECK(ino != 0, "no maps line for %p", addr);
	return ino;
}

static void check_range(const unsigned char *p, uint64_t seed, size_t off,
			size_t len, const char *what)
{
	long d = tt_find_diff(seed, off, p + off, len);

	CHECK(d < 0, "%s: byte %ld is wrong", what, d);
}

static void check_zero(size_t off, size_t len, const char *what)
{
	size_t i;

	for (i = off; i < off + len; i++)
		CHECK(sh[i] == 0, "%s: byte %zu is %#x, want 0", what, i, sh[i]);
}

static void wait_word(size_t off, uint64_t want, const char *what)
{
	long long end = case_now() + TT_TIMEOUT_MS * 1000000LL;

	while (*(volatile uint64_t *)(sh + off) != want) {
		CHECK(case_now() < end, "%s: value %#llx never seen (word %#llx)",
		      what, (unsigned long long)want,
		      (unsigned long long)*(volatile uint64_t *)(sh + off));
		case_sleep_ms(1);
	}
}

/* check_all checks the whole shared region as left before ready. */
static void check_all(const char *who)
{
	check_range(sh, K_SEED, 0, 128 * PAGE, who);
	check_range(sh, R_SEED, 128 * PAGE, 128 * PAGE, who);
	check_zero(256 * PAGE, 256 * PAGE, who);
}

int main(int argc, char **argv)
{
	int r2k[2], k2r[2];
	unsigned long ino, kino;
	pid_t root, k, pids[2];
	char c = 's';

	case_init(argc, argv);
	root = getpid();
	sh = mmap(NULL, SH_LEN, PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	priv = mmap(NULL, PRIV_LEN, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(sh != MAP_FAILED && priv != MAP_FAILED, "mmap: %s",
	      strerror(errno));
	tt_fill(P_SEED, 0, priv, PRIV_LEN);
	tt_pipe(r2k);
	tt_pipe(k2r);

	k = tt_fork();
	if (k == 0) {
		close(r2k[1]);
		close(k2r[0]);
		tt_fill(K_SEED, 0, sh, 128 * PAGE);
		tt_fill(PK_SEED, 0, priv, PRIV_LEN);
		tt_write_full(k2r[1], &c, 1, "K: written");
		tt_read_full(r2k[0], &c, 1, "K: R has written");
		check_all("K before ready");
		kino = maps_inode(sh);
		tt_write_full(k2r[1], &kino, sizeof(kino), "K: inode");

		case_wait_go();
		check_all("K after restore");
		check_range(priv, PK_SEED, 0, PRIV_LEN, "K: private copy");
		tt_write_full(k2r[1], &c, 1, "K: checked");
		wait_word(OFF_M1, M1, "K: R's new write");
		*(volatile uint64_t *)(sh + OFF_M2) = M2;
		*(volatile uint64_t *)(sh + OFF_M3) = M3;
		kino = maps_inode(sh);
		tt_write_full(k2r[1], &kino, sizeof(kino), "K: inode");
		_exit(0);
	}
	close(r2k[0]);
	close(k2r[1]);
	tt_read_full(k2r[0], &c, 1, "K has written");
	check_range(sh, K_SEED, 0, 128 * PAGE, "R: K's part");
	tt_fill(R_SEED, 128 * PAGE, sh + 128 * PAGE, 128 * PAGE);
	tt_write_full(r2k[1], &c, 1, "R: written");
	tt_read_full(k2r[0], &kino, sizeof(kino), "K's inode");
	ino = maps_inode(sh);
	CHECK(ino == kino, "R maps inode %lu, K %lu: not one object", ino, kino);
	check_all("R before ready");
	check_range(priv, P_SEED, 0, PRIV_LEN, "R: private copy");
	case_log("K %d; shared region inode %lu", (int)k, ino);
	pids[0] = root;
	pids[1] = k;
	tt_write_tree(pids, 2);
	case_ready();

	case_wait_go();
	check_all("R after restore");
	check_range(priv, P_SEED, 0, PRIV_LEN, "R: private copy");
	/* K has checked the never-touched pages too: now write into them. */
	tt_read_full(k2r[0], &c, 1, "K checked the region");
	*(volatile uint64_t *)(sh + OFF_M1) = M1;
	wait_word(OFF_M2, M2, "R: K's new write");
	wait_word(OFF_M3, M3, "R: K's write into R's part");
	tt_read_full(k2r[0], &kino, sizeof(kino), "K's inode");
	ino = maps_inode(sh);
	CHECK(ino == kino, "after restore R maps inode %lu, K %lu: not one object",
	      ino, kino);
	tt_expect_exit(k, 0, "K");
	tt_no_children();
	case_pass();
}

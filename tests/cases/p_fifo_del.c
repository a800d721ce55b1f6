/*
 * p_fifo_del: named pipes unlinked while open.
 *
 *   fifo    opened O_RDONLY|O_NONBLOCK and O_WRONLY, 11 bytes queued, then
 *           unlinked; its name stays free
 *   fifo2   opened O_RDWR, 2 bytes queued, unlinked, and a regular file
 *           "fifo2" (contents "keep") created at its name afterwards
 *
 * After go: each fd is still a FIFO with no links, with its F_GETFL and its
 * /proc/self/fd readlink ("WORKDIR/fifo (deleted)") exactly as before; the
 * two ends of fifo are one pipe; the queued bytes come back once; "fifo"
 * does not exist, "fifo2" is the same regular file with "keep", and nothing
 * else is in the work dir.
 */
#include "case.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

struct fdrec {
	int fd;
	int flags;
	char link[PATH_MAX];
};

static struct fdrec recs[3];

static void record(struct fdrec *r, int fd)
{
	char p[64];
	ssize_t n;

	CHECK(fd >= 0, "open: %s", strerror(errno));
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	n = readlink(p, r->link, sizeof(r->link) - 1);
	CHECK(n > 0, "readlink %s: %s", p, strerror(errno));
	r->link[n] = 0;
	r->fd = fd;
	r->flags = fcntl(fd, F_GETFL);
}

static void check_rec(struct fdrec *r)
{
	struct fdrec now;
	struct stat st;

	record(&now, r->fd);
	CHECK(strcmp(now.link, r->link) == 0, "fd %d: readlink %s, want %s",
	      r->fd, now.link, r->link);
	CHECK(now.flags == r->flags, "fd %d: flags %#o, want %#o", r->fd,
	      now.flags, r->flags);
	CHECK(fstat(r->fd, &st) == 0 && S_ISFIFO(st.st_mode) && st.st_nlink == 0,
	      "fd %d: not an unlinked FIFO (mode %#o, %lu links)", r->fd,
	      st.st_mode, (unsigned long)st.st_nlink);
}

static void expect_data(int fd, const char *want)
{
	char buf[64];
	ssize_t n = read(fd, buf, sizeof(buf));
	int fl = fcntl(fd, F_GETFL);

	CHECK(n == (ssize_t)strlen(want) && memcmp(buf, want, (size_t)n) == 0,
	      "fd %d: read %zd bytes, want \"%s\"", fd, n, want);
	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	CHECK(read(fd, buf, sizeof(buf)) < 0 && errno == EAGAIN,
	      "fd %d: more data than was queued", fd);
	fcntl(fd, F_SETFL, fl);
}

int main(int argc, char **argv)
{
	struct stat a, b, keep0, keep1;
	char buf[16];
	struct dirent *de;
	DIR *d;
	int fd;

	case_init(argc, argv);
	CHECK(mkfifo("fifo", 0640) == 0, "mkfifo: %s", strerror(errno));
	record(&recs[0], open("fifo", O_RDONLY | O_NONBLOCK));
	record(&recs[1], open("fifo", O_WRONLY));
	CHECK(write(recs[1].fd, "queued data", 11) == 11, "write: %s",
	      strerror(errno));
	CHECK(unlink("fifo") == 0, "unlink: %s", strerror(errno));
	record(&recs[0], recs[0].fd);
	record(&recs[1], recs[1].fd);

	CHECK(mkfifo("fifo2", 0600) == 0, "mkfifo: %s", strerror(errno));
	fd = open("fifo2", O_RDWR);
	CHECK(write(fd, "x2", 2) == 2, "write: %s", strerror(errno));
	CHECK(unlink("fifo2") == 0, "unlink: %s", strerror(errno));
	record(&recs[2], fd);
	fd = open("fifo2", O_WRONLY | O_CREAT | O_EXCL, 0644);
	CHECK(fd >= 0 && write(fd, "keep", 4) == 4, "fifo2 file: %s",
	      strerror(errno));
	close(fd);
	CHECK(stat("fifo2", &keep0) == 0, "stat fifo2: %s", strerror(errno));
	case_log("%s, %s", recs[0].link, recs[2].link);
	case_ready();

	case_wait_go();
	check_rec(&recs[0]);
	check_rec(&recs[1]);
	check_rec(&recs[2]);
	CHECK(fstat(recs[0].fd, &a) == 0 && fstat(recs[1].fd, &b) == 0 &&
		      a.st_ino == b.st_ino && a.st_dev == b.st_dev,
	      "fifo: the two ends are not one FIFO");
	CHECK((a.st_mode & 07777) == 0640, "fifo: mode %#o", a.st_mode);
	expect_data(recs[0].fd, "queued data");
	expect_data(recs[2].fd, "x2");
	CHECK(access("fifo", F_OK) != 0, "fifo exists again");
	CHECK(stat("fifo2", &keep1) == 0 && S_ISREG(keep1.st_mode) &&
		      keep1.st_ino == keep0.st_ino,
	      "fifo2 is not the same regular file");
	fd = open("fifo2", O_RDONLY);
	CHECK(fd >= 0 && read(fd, buf, sizeof(buf)) == 4 &&
		      memcmp(buf, "keep", 4) == 0,
	      "fifo2 lost its contents");
	close(fd);
	d = opendir(".");
	CHECK(d != NULL, "opendir: %s", strerror(errno));
	while ((de = readdir(d)) != NULL)
		CHECK(strstr(de->d_name, "ctr-cr") == NULL, "left behind: %s",
		      de->d_name);
	closedir(d);
	case_pass();
}

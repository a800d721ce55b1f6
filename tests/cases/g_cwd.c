/*
 * g_cwd: a deleted cwd, a deleted open directory, chroot'ed tasks and a
 * deleted root come back.
 *
 * Setup: the case enters WORKDIR/gone (mode 0751) and removes it; it holds
 * an fd of WORKDIR/gonefd, removed too. Children, each in its own state:
 *   J: cwd WORKDIR/jail/sub, root WORKDIR/jail (chdir then chroot);
 *   K: root WORKDIR/jail2, cwd left at WORKDIR, outside its root;
 *   D: root and cwd WORKDIR/droot, which the parent then removes.
 * Each child records what it sees, waits for a byte from the parent, then
 * checks again from inside and reports on a pipe.
 *
 * After "go": /proc/self/cwd reads "WORKDIR/gone (deleted)", "." has nlink
 * 0 and mode 0751 and no file can be made in it; the directory fd reads
 * "WORKDIR/gonefd (deleted)" with nlink 0 and its mode; J sees
 * /sub/hello.txt, getcwd "/sub", ".." stops at its root, root and cwd the
 * same inodes as before; K's root and cwd (outside it) are the same
 * inodes as before; D's root and cwd are one removed directory with mode
 * 0705 (recreated: a new inode); nothing is left in WORKDIR.
 */
#define _GNU_SOURCE
#include "case.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

static int report; /* child: write end of the report pipe */

__attribute__((format(printf, 1, 2), noreturn)) static void
child_fail(const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	write(report, msg, strlen(msg));
	_exit(1);
}

#define CCHECK(cond, ...)                                                      \
	do {                                                                   \
		if (!(cond))                                                   \
			child_fail(__VA_ARGS__);                               \
	} while (0)

struct child {
	pid_t pid;
	int go, rep;
	const char *name;
};

static void wait_parent(int go)
{
	char c;
	CCHECK(read(go, &c, 1) == 1, "read go");
}

static void jail_child(int go, const char *work)
{
	char p[PATH_MAX], cwd[PATH_MAX];
	struct stat root0, cwd0, st;
	snprintf(p, sizeof p, "%s/jail/sub", work);
	CCHECK(chdir(p) == 0, "chdir %s", p);
	snprintf(p, sizeof p, "%s/jail", work);
	CCHECK(chroot(p) == 0, "chroot %s: %s", p, strerror(errno));
	CCHECK(stat("/", &root0) == 0 && stat(".", &cwd0) == 0, "stat");
	write(report, "", 0);
	wait_parent(go);
	CCHECK(getcwd(cwd, sizeof cwd) && !strcmp(cwd, "/sub"), "J: getcwd %s", cwd);
	CCHECK(stat("/", &st) == 0 && st.st_ino == root0.st_ino, "J: root changed");
	CCHECK(stat(".", &st) == 0 && st.st_ino == cwd0.st_ino, "J: cwd changed");
	int fd = open("/sub/hello.txt", O_RDONLY);
	CCHECK(fd >= 0, "J: /sub/hello.txt: %s", strerror(errno));
	char buf[8] = {0};
	CCHECK(read(fd, buf, 5) == 5 && !memcmp(buf, "hello", 5), "J: contents");
	CCHECK(stat("/../..", &st) == 0 && st.st_ino == root0.st_ino, "J: .. leaves the root");
	_exit(0);
}

static void outside_child(int go, const char *work)
{
	char p[PATH_MAX];
	struct stat root0, cwd0, st;
	snprintf(p, sizeof p, "%s/jail2", work);
	CCHECK(chroot(p) == 0, "chroot %s: %s", p, strerror(errno));
	CCHECK(stat("/", &root0) == 0 && stat(".", &cwd0) == 0, "stat");
	CCHECK(root0.st_ino != cwd0.st_ino, "K: cwd is the root");
	wait_parent(go);
	CCHECK(stat("/", &st) == 0 && st.st_ino == root0.st_ino, "K: root changed");
	CCHECK(stat(".", &st) == 0 && st.st_ino == cwd0.st_ino, "K: cwd changed (outside the root)");
	CCHECK(access("jail2/marker", F_OK) == 0, "K: cwd is not WORKDIR");
	CCHECK(access("/marker", F_OK) == 0, "K: root is not jail2");
	_exit(0);
}

static void droot_child(int go, int ready, const char *work)
{
	char p[PATH_MAX];
	struct stat st, st2;
	snprintf(p, sizeof p, "%s/droot", work);
	CCHECK(chdir(p) == 0, "chdir %s", p);
	CCHECK(chroot(".") == 0, "chroot .: %s", strerror(errno));
	write(ready, "r", 1);
	wait_parent(go);
	CCHECK(stat("/", &st) == 0 && stat(".", &st2) == 0, "D: stat");
	CCHECK(st.st_ino == st2.st_ino && st.st_dev == st2.st_dev, "D: root and cwd differ");
	CCHECK(st.st_nlink == 0, "D: root nlink %lu", (unsigned long)st.st_nlink);
	CCHECK((st.st_mode & 07777) == 0705, "D: mode %o", st.st_mode & 07777);
	CCHECK(open("/x", O_CREAT | O_WRONLY, 0600) < 0 && errno == ENOENT, "D: created a file in a removed root");
	_exit(0);
}

static struct child start(const char *name, int kind, const char *work)
{
	int go[2], rep[2], rdy[2];
	CHECK(pipe(go) == 0 && pipe(rep) == 0 && pipe(rdy) == 0, "pipe");
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		close(go[1]);
		close(rep[0]);
		close(rdy[0]);
		report = rep[1];
		if (kind == 0)
			jail_child(go[0], work);
		else if (kind == 1)
			outside_child(go[0], work);
		droot_child(go[0], rdy[1], work);
	}
	close(go[0]);
	close(rep[1]);
	close(rdy[1]);
	if (kind == 2) {
		char c;
		CHECK(read(rdy[0], &c, 1) == 1, "D not ready");
	}
	close(rdy[0]);
	return (struct child){pid, go[1], rep[0], name};
}

static void finish(struct child c)
{
	char msg[256] = {0};
	int status;
	CHECK(write(c.go, "g", 1) == 1, "go %s", c.name);
	ssize_t n = read(c.rep, msg, sizeof msg - 1);
	CHECK(waitpid(c.pid, &status, 0) == c.pid, "waitpid %s", c.name);
	CHECK(n <= 0, "child %s: %s", c.name, msg);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %s: status %#x", c.name, status);
}

int main(int argc, char **argv)
{
	char p[PATH_MAX], link[PATH_MAX], want[PATH_MAX];
	const char *work;

	case_init(argc, argv);
	work = argv[1];
	CHECK(mkdir("jail", 0755) == 0 && mkdir("jail/sub", 0755) == 0, "mkdir jail");
	int h = open("jail/sub/hello.txt", O_CREAT | O_WRONLY, 0644);
	CHECK(h >= 0 && write(h, "hello", 5) == 5, "hello.txt");
	close(h);
	CHECK(mkdir("jail2", 0755) == 0, "mkdir jail2");
	close(open("jail2/marker", O_CREAT | O_WRONLY, 0644));
	CHECK(mkdir("droot", 0705) == 0 && chmod("droot", 0705) == 0, "mkdir droot");
	CHECK(mkdir("gonefd", 0700) == 0, "mkdir gonefd");
	int dfd = open("gonefd", O_RDONLY | O_DIRECTORY);
	CHECK(dfd >= 0, "open gonefd");

	struct child j = start("J", 0, work);
	struct child k = start("K", 1, work);
	struct child d = start("D", 2, work);
	CHECK(rmdir("droot") == 0, "rmdir droot: %s", strerror(errno));
	CHECK(rmdir("gonefd") == 0, "rmdir gonefd");
	CHECK(mkdir("gone", 0751) == 0 && chmod("gone", 0751) == 0, "mkdir gone");
	CHECK(chdir("gone") == 0, "chdir gone");
	snprintf(p, sizeof p, "%s/gone", work);
	CHECK(rmdir(p) == 0, "rmdir gone: %s", strerror(errno));

	case_ready();
	case_wait_go();

	ssize_t n = readlink("/proc/self/cwd", link, sizeof link - 1);
	CHECK(n > 0, "readlink cwd");
	link[n] = 0;
	snprintf(want, sizeof want, "%s/gone (deleted)", work);
	CHECK(!strcmp(link, want), "cwd %s, want %s", link, want);
	struct stat st;
	CHECK(stat(".", &st) == 0, "stat .");
	CHECK(st.st_nlink == 0 && (st.st_mode & 07777) == 0751, "cwd nlink %lu mode %o",
	      (unsigned long)st.st_nlink, st.st_mode & 07777);
	CHECK(open("x", O_CREAT | O_WRONLY, 0600) < 0 && errno == ENOENT, "created a file in a removed cwd");
	snprintf(p, sizeof p, "/proc/self/fd/%d", dfd);
	n = readlink(p, link, sizeof link - 1);
	CHECK(n > 0, "readlink dfd");
	link[n] = 0;
	snprintf(want, sizeof want, "%s/gonefd (deleted)", work);
	CHECK(!strcmp(link, want), "dir fd %s, want %s", link, want);
	CHECK(fstat(dfd, &st) == 0 && S_ISDIR(st.st_mode) && st.st_nlink == 0 &&
		      (st.st_mode & 07777) == 0700,
	      "dir fd nlink %lu mode %o", (unsigned long)st.st_nlink, st.st_mode);
	finish(j);
	finish(k);
	finish(d);
	snprintf(p, sizeof p, "%s/gone", work);
	CHECK(access(p, F_OK) != 0, "gone is back in WORKDIR");
	snprintf(p, sizeof p, "%s/droot", work);
	CHECK(access(p, F_OK) != 0, "droot is back in WORKDIR");
	case_pass();
}

/*
 * t_mntns: the init of a pid namespace in a mount namespace of its own
 * with a root of its own (what `unshare --fork --pid --mount-proc --mount`
 * plus a pivot_root into a prepared root make), dumped as its own tree:
 * the image carries the mount namespace and restore rebuilds it on
 * `--root WORKDIR/rootfs`.
 *
 *   C   case root, not dumped: unshare(CLONE_NEWPID), forks N, writes N's
 *   |   pid (as the root namespace sees it) to WORKDIR/dumpme
 *   `-- N   pid 1 of the new pid namespace; unshare(CLONE_NEWNS); makes
 *           WORKDIR/rootfs its root:
 *             /        WORKDIR/rootfs bound on itself (the --root)
 *             /usr     the host's /usr, read-only   (external, key /usr)
 *             /tmp     the host's /tmp              (external, key /tmp)
 *             /dev     the host's /dev (devtmpfs)   (external, key dev)
 *             /proc    a proc of N's pid namespace
 *             /mnt     a tmpfs holding hello and sub/
 *             /bind    a bind of /mnt/sub
 *           bin, lib, lib64 are symlinks into usr; then pivot_root and
 *           detach the old root, chdir WORKDIR (through /tmp).
 *
 * After go N checks from inside: pid 1; /mnt/hello's contents; a file
 * written into /mnt/sub shows in /bind; mountinfo has tmpfs at /mnt and
 * /bind, proc at /proc, /usr read-only; /proc/1/comm is N's own (the proc
 * is its namespace's); /dev/null opens. It writes WORKDIR/ns.result,
 * which C turns into PASS/FAIL as in t_pidns.
 */
#include "t_pidns.h"
#include <sys/mount.h>
#include <sys/syscall.h>

static void put(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	NCHECK(fd >= 0 && write(fd, s, strlen(s)) == (ssize_t)strlen(s),
	       "write %s: %s", path, strerror(errno));
	close(fd);
}

static void get(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	NCHECK(fd >= 0, "open %s: %s", path, strerror(errno));
	n = read(fd, buf, size - 1);
	NCHECK(n >= 0, "read %s: %s", path, strerror(errno));
	buf[n] = 0;
	close(fd);
}

static void mnt(const char *src, const char *dst, const char *type,
		unsigned long flags)
{
	NCHECK(mount(src, dst, type, flags, NULL) == 0, "mount %s on %s: %s",
	       src, dst, strerror(errno));
}

static void sub(char *out, const char *root, const char *rel)
{
	snprintf(out, PATH_MAX + 64, "%s/%s", root, rel);
}

/* make_root builds WORKDIR/rootfs and pivots into it. */
static void make_root(void)
{
	char r[PATH_MAX + 16], p[PATH_MAX + 64];
	const char *dirs[] = {"usr", "tmp", "dev", "proc", "mnt", "bind"};
	const char *links[][2] = {{"bin", "usr/bin"},
				  {"lib", "usr/lib"},
				  {"lib64", "usr/lib64"}};
	size_t i;

	NCHECK(unshare(CLONE_NEWNS) == 0, "unshare(CLONE_NEWNS): %s",
	       strerror(errno));
	mnt("none", "/", NULL, MS_REC | MS_PRIVATE);
	snprintf(r, sizeof(r), "%s/rootfs", case_workdir);
	NCHECK(mkdir(r, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", r,
	       strerror(errno));
	for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		sub(p, r, dirs[i]);
		NCHECK(mkdir(p, 0755) == 0 || errno == EEXIST, "mkdir %s: %s",
		       p, strerror(errno));
	}
	for (i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		sub(p, r, links[i][0]);
		NCHECK(symlink(links[i][1], p) == 0 || errno == EEXIST,
		       "symlink %s: %s", p, strerror(errno));
	}
	mnt(r, r, NULL, MS_BIND);
	sub(p, r, "usr");
	mnt("/usr", p, NULL, MS_BIND);
	mnt("none", p, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY);
	sub(p, r, "tmp");
	mnt("/tmp", p, NULL, MS_BIND);
	sub(p, r, "dev");
	mnt("/dev", p, NULL, MS_BIND);
	sub(p, r, "proc");
	mnt("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
	sub(p, r, "mnt");
	mnt("tmpfs", p, "tmpfs", 0);
	sub(p, r, "mnt/sub");
	NCHECK(mkdir(p, 0755) == 0, "mkdir %s: %s", p, strerror(errno));
	sub(p, r, "mnt/hello");
	put(p, "hello from tmpfs\n");
	{
		char b[PATH_MAX + 64];

		sub(p, r, "mnt/sub");
		sub(b, r, "bind");
		mnt(p, b, NULL, MS_BIND);
	}
	NCHECK(chdir(r) == 0, "chdir %s: %s", r, strerror(errno));
	NCHECK(syscall(SYS_pivot_root, ".", ".") == 0, "pivot_root: %s",
	       strerror(errno));
	NCHECK(umount2(".", MNT_DETACH) == 0, "detach old root: %s",
	       strerror(errno));
	NCHECK(chdir(case_workdir) == 0, "chdir %s: %s", case_workdir,
	       strerror(errno));
}

/* has_mount reports whether mountinfo has fstype at mount point mp (and,
 * with ro, mounted read-only). */
static int has_mount(const char *mp, const char *fstype, int ro)
{
	static char buf[1 << 16];
	char *line, *save = NULL;

	get("/proc/self/mountinfo", buf, sizeof(buf));
	for (line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char m[PATH_MAX], opts[256], *dash = strstr(line, " - ");
		char type[64];

		if (!dash || sscanf(line, "%*d %*d %*s %*s %4095s %255s", m,
				    opts) != 2)
			continue;
		if (sscanf(dash + 3, "%63s", type) != 1)
			continue;
		if (strcmp(m, mp) == 0 && strcmp(type, fstype) == 0 &&
		    (!ro || strncmp(opts, "ro", 2) == 0))
			return 1;
	}
	return 0;
}

static __attribute__((noreturn)) void ns_init(void)
{
	char buf[256];
	int fd;

	NCHECK(getpid() == 1, "ns init: pid %d, want 1", (int)getpid());
	NCHECK(setsid() == 1, "ns init: setsid: %s", strerror(errno));
	make_root();
	write_file("ns.ready", "ready\n");

	case_wait_go();
	NCHECK(getpid() == 1, "ns init after restore: pid %d", (int)getpid());
	get("/mnt/hello", buf, sizeof(buf));
	NCHECK(strcmp(buf, "hello from tmpfs\n") == 0, "/mnt/hello: %s", buf);
	put("/mnt/sub/new", "through the bind\n");
	get("/bind/new", buf, sizeof(buf));
	NCHECK(strcmp(buf, "through the bind\n") == 0, "/bind/new: %s", buf);
	NCHECK(has_mount("/mnt", "tmpfs", 0), "no tmpfs at /mnt");
	NCHECK(has_mount("/bind", "tmpfs", 0), "no tmpfs bind at /bind");
	NCHECK(has_mount("/proc", "proc", 0), "no proc at /proc");
	NCHECK(has_mount("/usr", "ext4", 1) || has_mount("/usr", "overlay", 1) ||
		       has_mount("/usr", "xfs", 1) || has_mount("/usr", "btrfs", 1),
	       "/usr is not a read-only mount");
	NCHECK(!has_mount("/sys", "sysfs", 0), "the host's /sys is visible");
	get("/proc/1/comm", buf, sizeof(buf));
	NCHECK(strncmp(buf, "t_mntns", 7) == 0, "/proc/1/comm: %s", buf);
	fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	NCHECK(fd >= 0, "/dev/null: %s", strerror(errno));
	close(fd);
	write_file("ns.result", "PASS\n");
	_exit(0);
}

int main(int argc, char **argv)
{
	return pidns_main(argc, argv, ns_init);
}

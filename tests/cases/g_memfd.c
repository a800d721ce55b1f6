/*
 * g_memfd: memfds keep their name, mode, seals and creation flags; a
 * process exec'd from a memfd keeps it as its exe; a memfd whose fd and
 * mapping are in different processes stays one object.
 *
 * Setup: the case re-executes itself from a memfd "g-exe" (fexecve), so
 * /proc/self/exe is "/memfd:g-exe (deleted)". Then:
 *   S: MFD_ALLOW_SEALING|MFD_CLOEXEC "sealed", 5000 bytes, mode 0640,
 *      seals GROW|SHRINK|SEAL;
 *   N: no flags "plain" (F_SEAL_SEAL: cannot be sealed), mode 0604;
 *   X: MFD_NOEXEC_SEAL "noexec" (F_SEAL_EXEC, not executable);
 *   W: MFD_ALLOW_SEALING "wsealed", F_SEAL_WRITE, then mapped shared
 *      read-only;
 *   F: MFD_ALLOW_SEALING "future", mapped shared writable, then
 *      F_SEAL_FUTURE_WRITE;
 *   F2: MFD_ALLOW_SEALING "future2", F_SEAL_FUTURE_WRITE, then mapped
 *      shared read-only (which may then never become writable);
 *   P: "shared" mapped shared by this process, which closes its fd, and
 *      held as an fd (not mapped) by a child.
 *
 * After "go": names, modes, F_GET_SEALS, cloexec and contents as before;
 * the sealed operations still fail (ftruncate, F_ADD_SEALS, chmod +x,
 * write, new writable mapping) and the allowed ones work (the old
 * writable mapping of F); /proc/self/exe is the memfd again with the same
 * bytes; the child's write through P's fd shows in our mapping.
 */
#define _GNU_SOURCE
#include "case.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 8U
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x20
#endif

static int mk(const char *name, unsigned flags, const char *data, size_t len)
{
	int fd = memfd_create(name, flags);
	CHECK(fd >= 0, "memfd_create %s: %s", name, strerror(errno));
	CHECK(write(fd, data, len) == (ssize_t)len, "write %s", name);
	return fd;
}

static void same_file(int fd, const char *name, int mode, int seals,
		      int cloexec)
{
	char p[64], t[256], want[256];
	struct stat st;
	snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(p, t, sizeof t - 1);
	CHECK(n > 0, "readlink %s", p);
	t[n] = 0;
	snprintf(want, sizeof want, "/memfd:%s (deleted)", name);
	CHECK(!strcmp(t, want), "fd %d is %s, want %s", fd, t, want);
	CHECK(fstat(fd, &st) == 0, "fstat");
	CHECK((st.st_mode & 07777) == (unsigned)mode, "%s: mode %o, was %o",
	      name, st.st_mode & 07777, mode);
	int s = fcntl(fd, F_GET_SEALS);
	CHECK(s == seals, "%s: seals %#x, were %#x", name, s, seals);
	CHECK(!!(fcntl(fd, F_GETFD) & FD_CLOEXEC) == cloexec, "%s: cloexec",
	      name);
}

static unsigned long sum_file(const char *path, long *size)
{
	unsigned long h = 5381;
	char buf[4096];
	int fd = open(path, O_RDONLY);
	CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
	*size = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		CHECK(n >= 0, "read %s", path);
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			h = h * 33 + (unsigned char)buf[i];
		*size += n;
	}
	close(fd);
	return h;
}

int main(int argc, char **argv)
{
	static char big[5000];
	char exe[256];

	case_init(argc, argv);
	if (argc < 3) {
		/* run again from a memfd holding this very program */
		long size;
		int src = open("/proc/self/exe", O_RDONLY);
		CHECK(src >= 0, "open exe");
		int m = memfd_create("g-exe", MFD_CLOEXEC);
		CHECK(m >= 0, "memfd_create g-exe");
		char buf[65536];
		ssize_t n;
		while ((n = read(src, buf, sizeof buf)) > 0)
			CHECK(write(m, buf, n) == n, "copy exe");
		close(src);
		(void)size;
		char *av[] = {argv[0], argv[1], "from-memfd", NULL};
		extern char **environ;
		fexecve(m, av, environ);
		case_fail("fexecve: %s", strerror(errno));
	}
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	CHECK(n > 0, "readlink exe");
	exe[n] = 0;
	CHECK(!strcmp(exe, "/memfd:g-exe (deleted)"), "exe is %s", exe);
	long exe_size, size_now;
	unsigned long exe_sum = sum_file("/proc/self/exe", &exe_size);

	for (size_t i = 0; i < sizeof big; i++)
		big[i] = (char)(i * 13);
	int s = mk("sealed", MFD_ALLOW_SEALING | MFD_CLOEXEC, big, sizeof big);
	CHECK(fchmod(s, 0640) == 0, "fchmod S");
	CHECK(fcntl(s, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) == 0,
	      "seal S: %s", strerror(errno));
	int np = mk("plain", 0, "plain", 5);
	CHECK(fchmod(np, 0604) == 0, "fchmod N");
	int x = memfd_create("noexec", MFD_NOEXEC_SEAL);
	CHECK(x >= 0, "MFD_NOEXEC_SEAL: %s", strerror(errno));
	int w = mk("wsealed", MFD_ALLOW_SEALING, "wsealed!", 8);
	CHECK(fcntl(w, F_ADD_SEALS, F_SEAL_WRITE) == 0, "seal W: %s",
	      strerror(errno));
	char *wm = mmap(NULL, 4096, PROT_READ, MAP_SHARED, w, 0);
	CHECK(wm != MAP_FAILED, "map W: %s", strerror(errno));
	int f = mk("future", MFD_ALLOW_SEALING, "future", 6);
	char *fm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
	CHECK(fm != MAP_FAILED, "map F");
	CHECK(fcntl(f, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) == 0, "seal F: %s",
	      strerror(errno));
	int f2 = mk("future2", MFD_ALLOW_SEALING, "future2", 7);
	CHECK(fcntl(f2, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) == 0, "seal F2");
	char *f2m = mmap(NULL, 4096, PROT_READ, MAP_SHARED, f2, 0);
	CHECK(f2m != MAP_FAILED, "map F2: %s", strerror(errno));
	CHECK(mprotect(f2m, 4096, PROT_READ | PROT_WRITE) < 0, "setup: F2 mapping made writable");
	int p = mk("shared", 0, "shared", 6);
	CHECK(ftruncate(p, 4096) == 0, "ftruncate P");
	char *pm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, p, 0);
	CHECK(pm != MAP_FAILED, "map P");
	int go[2];
	CHECK(pipe(go) == 0, "pipe");
	pid_t child = fork();
	CHECK(child >= 0, "fork");
	if (child == 0) {
		char c;
		munmap(pm, 4096);
		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			_exit(2);
		_exit(pwrite(p, "CHILD", 5, 100) == 5 ? 0 : 1);
	}
	close(go[0]);
	close(p);
	struct stat xs;
	CHECK(fstat(x, &xs) == 0, "fstat X");
	int xmode = xs.st_mode & 07777, xseals = fcntl(x, F_GET_SEALS);
	case_log("noexec mode %o seals %#x", xmode, xseals);

	case_ready();
	case_wait_go();

	same_file(s, "sealed", 0640, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL, 1);
	same_file(np, "plain", 0604, F_SEAL_SEAL, 0);
	same_file(x, "noexec", xmode, xseals, 0);
	CHECK(xseals & F_SEAL_EXEC, "X has no F_SEAL_EXEC");
	same_file(w, "wsealed", 0777, F_SEAL_WRITE, 0);
	same_file(f, "future", 0777, F_SEAL_FUTURE_WRITE, 0);
	char buf[5000];
	CHECK(pread(s, buf, sizeof buf, 0) == sizeof buf && !memcmp(buf, big, sizeof big),
	      "S contents");
	CHECK(ftruncate(s, 10) < 0 && errno == EPERM, "S shrank");
	CHECK(pwrite(s, "x", 1, sizeof big) < 0, "S grew");
	CHECK(fcntl(s, F_ADD_SEALS, F_SEAL_WRITE) < 0, "S sealed again");
	CHECK(fcntl(np, F_ADD_SEALS, F_SEAL_WRITE) < 0, "N could be sealed");
	CHECK(fchmod(x, 0755) < 0, "X made executable");
	CHECK(pwrite(w, "x", 1, 0) < 0 && errno == EPERM, "W written");
	CHECK(!memcmp(wm, "wsealed!", 8), "W mapping");
	CHECK(mprotect(wm, 4096, PROT_READ | PROT_WRITE) < 0, "W mapping made writable");
	CHECK(!memcmp(fm, "future", 6), "F mapping");
	fm[0] = 'F';
	CHECK(pread(f, buf, 1, 0) == 1 && buf[0] == 'F', "F old mapping not writable/shared");
	CHECK(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0) == MAP_FAILED,
	      "F new writable mapping");

	same_file(f2, "future2", 0777, F_SEAL_FUTURE_WRITE, 0);
	CHECK(!memcmp(f2m, "future2", 7), "F2 mapping");
	CHECK(mprotect(f2m, 4096, PROT_READ | PROT_WRITE) < 0,
	      "F2 mapping (made after F_SEAL_FUTURE_WRITE) made writable");

	n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	CHECK(n > 0, "readlink exe");
	exe[n] = 0;
	CHECK(!strcmp(exe, "/memfd:g-exe (deleted)"), "exe is %s after restore", exe);
	CHECK(sum_file("/proc/self/exe", &size_now) == exe_sum && size_now == exe_size,
	      "exe contents differ (%ld bytes, were %ld)", size_now, exe_size);

	CHECK(!memcmp(pm, "shared", 6), "P mapping");
	CHECK(write(go[1], "g", 1) == 1, "tell child");
	int status;
	CHECK(waitpid(child, &status, 0) == child, "waitpid");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	CHECK(!memcmp(pm + 100, "CHILD", 5), "child's write through P's fd not in our mapping");
	case_pass();
}

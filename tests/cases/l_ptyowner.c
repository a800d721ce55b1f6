/*
 * l_ptyowner: the owner and mode of pty slaves (/dev/pts/N) come back as
 * they were: pair A's slave is open and was fchown'ed to 1000:5 with mode
 * 0620 (what login/sshd do for the user's terminal); pair B's slave was
 * never opened and was chown'ed by path to 1001:1002 with mode 0604.
 * Checked from inside after the restores: fstat of A's slave fd, stat of
 * B's /dev/pts/N path (the same index comes back).
 */
#include "case.h"

#include <fcntl.h>
#include <sys/stat.h>

static void check(const char *what, const struct stat *st, uid_t uid, gid_t gid, mode_t mode)
{
	if (st->st_uid != uid || st->st_gid != gid || st->st_mode != (S_IFCHR | mode))
		case_fail("%s: uid %u gid %u mode %#o, want %u %u %#o", what,
			  st->st_uid, st->st_gid, st->st_mode, uid, gid, S_IFCHR | mode);
}

int main(int argc, char **argv)
{
	int ma, mb, sa;
	char na[64], nb[64];
	struct stat st;

	case_init(argc, argv);
	ma = posix_openpt(O_RDWR | O_NOCTTY);
	mb = posix_openpt(O_RDWR | O_NOCTTY);
	if (ma < 0 || mb < 0 || unlockpt(ma) || unlockpt(mb))
		case_fail("posix_openpt: %s", strerror(errno));
	snprintf(na, sizeof(na), "%s", ptsname(ma));
	snprintf(nb, sizeof(nb), "%s", ptsname(mb));
	sa = open(na, O_RDWR | O_NOCTTY);
	if (sa < 0)
		case_fail("open %s: %s", na, strerror(errno));
	if (fchown(sa, 1000, 5) || fchmod(sa, 0620))
		case_fail("fchown/fchmod %s: %s", na, strerror(errno));
	if (chown(nb, 1001, 1002) || chmod(nb, 0604))
		case_fail("chown/chmod %s: %s", nb, strerror(errno));
	case_log("pair A %s, pair B %s", na, nb);
	case_ready();
	case_wait_go();

	if (strcmp(ptsname(ma), na) || strcmp(ptsname(mb), nb))
		case_fail("indexes changed: %s %s, were %s %s", ptsname(ma), ptsname(mb), na, nb);
	if (fstat(sa, &st))
		case_fail("fstat slave A: %s", strerror(errno));
	check("slave A (open)", &st, 1000, 5, 0620);
	if (stat(nb, &st))
		case_fail("stat %s: %s", nb, strerror(errno));
	check("slave B (never opened)", &st, 1001, 1002, 0604);
	case_pass();
}

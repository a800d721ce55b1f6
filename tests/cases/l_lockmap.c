/*
 * l_lockmap: locks held only through a mapping (dumped with --file-locks).
 * WORKDIR/lockmap.dat: opened, flock(LOCK_EX), mmap'ed MAP_SHARED rw, fd
 * closed (a JVM's hsperfdata file); WORKDIR/lockmap_ofd.dat: the same with
 * an OFD write lock on bytes 0-99. The open files, and their locks, live on
 * in the mappings only. After the restores, from inside: a fresh open
 * cannot take the flock (EWOULDBLOCK) nor an OFD lock on 0-99 (F_OFD_GETLK
 * shows the write lock) but can on 100-199; the mappings still show the
 * files' data; after munmap of each, the lock is gone (it was on the
 * mapping's open file description): the same flock and OFD lock succeed.
 */
#include "case.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>

static char *map_locked(const char *name, int ofd)
{
	int fd = open(name, O_RDWR | O_CREAT | O_TRUNC, 0644);
	char *p;

	if (fd < 0 || ftruncate(fd, 4096))
		case_fail("create %s: %s", name, strerror(errno));
	if (ofd) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100 };

		if (fcntl(fd, F_OFD_SETLK, &fl))
			case_fail("F_OFD_SETLK: %s", strerror(errno));
	} else if (flock(fd, LOCK_EX)) {
		case_fail("flock: %s", strerror(errno));
	}
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		case_fail("mmap %s: %s", name, strerror(errno));
	close(fd);
	strcpy(p, name);
	return p;
}

/* ofd_conflict returns the type of the lock fd's F_OFD_GETLK finds on
 * start/len (F_UNLCK: none). */
static short ofd_conflict(int fd, off_t start, off_t len)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len };

	if (fcntl(fd, F_OFD_GETLK, &fl))
		case_fail("F_OFD_GETLK: %s", strerror(errno));
	return fl.l_type;
}

int main(int argc, char **argv)
{
	struct flock wr = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100 };
	char *pf, *po;
	int fresh, freshofd;

	case_init(argc, argv);
	pf = map_locked("lockmap.dat", 0);
	po = map_locked("lockmap_ofd.dat", 1);
	case_ready();
	case_wait_go();

	fresh = open("lockmap.dat", O_RDWR);
	freshofd = open("lockmap_ofd.dat", O_RDWR);
	if (fresh < 0 || freshofd < 0)
		case_fail("open: %s", strerror(errno));
	if (strcmp(pf, "lockmap.dat") || strcmp(po, "lockmap_ofd.dat"))
		case_fail("the mappings lost their data: %.16s / %.16s", pf, po);
	if (flock(fresh, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK)
		case_fail("the mapped file's flock is gone (flock: %s)", strerror(errno));
	if (ofd_conflict(freshofd, 0, 100) != F_WRLCK)
		case_fail("the mapped file's OFD write lock on 0-99 is gone");
	if (ofd_conflict(freshofd, 100, 100) != F_UNLCK)
		case_fail("an OFD lock on 100-199 that was never taken");
	pf[0] = 'L';
	if (munmap(pf, 4096))
		case_fail("munmap: %s", strerror(errno));
	if (flock(fresh, LOCK_EX | LOCK_NB))
		case_fail("flock after munmap (the lock was not the mapping's): %s", strerror(errno));
	if (fcntl(freshofd, F_OFD_SETLK, &wr) == 0)
		case_fail("OFD lock on 0-99 taken while the mapping holds one");
	if (munmap(po, 4096))
		case_fail("munmap: %s", strerror(errno));
	if (fcntl(freshofd, F_OFD_SETLK, &wr))
		case_fail("OFD lock after munmap (the lock was not the mapping's): %s", strerror(errno));
	case_pass();
}

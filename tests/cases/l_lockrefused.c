/*
 * l_lockrefused: locks a dump refuses, naming them. LOCK_VARIANT 0: a read
 * lease (F_SETLEASE) on WORKDIR/lease.dat; 1: an exclusive flock on
 * WORKDIR/mapped.dat whose fd was closed after mmap (the open file, and
 * its lock, live on in the mapping only: no fdinfo shows the lock). After
 * the refused dumps, from inside: the lease or lock is still held.
 */
#include "case.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>

#ifndef LOCK_VARIANT
#define LOCK_VARIANT 0
#endif

int main(int argc, char **argv)
{
	int fd;

	case_init(argc, argv);
#if LOCK_VARIANT == 0
	fd = open("lease.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		case_fail("create: %s", strerror(errno));
	close(fd);
	fd = open("lease.dat", O_RDONLY);
	if (fd < 0 || fcntl(fd, F_SETLEASE, F_RDLCK))
		case_fail("F_SETLEASE: %s", strerror(errno));
	case_ready();
	case_wait_go();
	if (fcntl(fd, F_GETLEASE) != F_RDLCK)
		case_fail("F_GETLEASE: %d, want F_RDLCK", fcntl(fd, F_GETLEASE));
#else
	char *p;
	int fresh;

	fd = open("mapped.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, 4096))
		case_fail("create: %s", strerror(errno));
	if (flock(fd, LOCK_EX))
		case_fail("flock: %s", strerror(errno));
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		case_fail("mmap: %s", strerror(errno));
	close(fd);
	case_ready();
	case_wait_go();
	fresh = open("mapped.dat", O_RDWR);
	if (fresh < 0)
		case_fail("open: %s", strerror(errno));
	if (flock(fresh, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK)
		case_fail("the mapped file's flock is gone (flock: %s)", strerror(errno));
	p[0] = 1;
#endif
	case_pass();
}

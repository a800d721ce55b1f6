/*
 * l_lockrefused: locks a dump refuses, naming them. LOCK_VARIANT 0: a read
 * lease (F_SETLEASE) on WORKDIR/lease.dat; 1: an exclusive flock on
 * WORKDIR/mapped.dat whose open file was sent in a unix socket (queued,
 * not received) and its fd closed, the same file mapped through another
 * open file (no fdinfo shows the lock; the mapping's file does not hold
 * it); 2: an exclusive flock on WORKDIR/mapped.dat whose fd was closed
 * after two mmaps of it (which mapping's open file holds the lock cannot
 * be told from outside). After the refused dumps, from inside: the lease
 * or lock is still held.
 */
#include "case.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>

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
#elif LOCK_VARIANT == 2
	char *p, *q;
	int fresh;

	fd = open("mapped.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, 4096))
		case_fail("create: %s", strerror(errno));
	if (flock(fd, LOCK_EX))
		case_fail("flock: %s", strerror(errno));
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	q = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED || q == MAP_FAILED)
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
	if (q[0] != 1)
		case_fail("the two mappings do not share the file");
#else
	char *p, c = 0;
	int sv[2], mfd, fresh;
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;

	fd = open("mapped.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, 4096))
		case_fail("create: %s", strerror(errno));
	if (flock(fd, LOCK_EX))
		case_fail("flock: %s", strerror(errno));
	/* the locked open file goes in flight in a socket's queue */
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		case_fail("socketpair: %s", strerror(errno));
	memset(cbuf, 0, sizeof(cbuf));
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	if (sendmsg(sv[0], &mh, 0) != 1)
		case_fail("sendmsg: %s", strerror(errno));
	close(fd);
	/* and the same file is mapped through another open file */
	mfd = open("mapped.dat", O_RDWR);
	p = mfd < 0 ? MAP_FAILED : mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (p == MAP_FAILED)
		case_fail("mmap: %s", strerror(errno));
	close(mfd);
	case_ready();
	case_wait_go();
	fresh = open("mapped.dat", O_RDWR);
	if (fresh < 0)
		case_fail("open: %s", strerror(errno));
	if (flock(fresh, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK)
		case_fail("the flock of the file in flight is gone (flock: %s)", strerror(errno));
	p[0] = 1;
#endif
	case_pass();
}

/*
 * e_fdkinds.c - fds that are not plain files: a memfd kept open (not mapped)
 * at an offset, an eventfd with a count, a semaphore eventfd, a non-blocking
 * eventfd, an epoll set watching an eventfd and a pipe read end (with
 * distinct data values), and a dup of the epoll fd.
 *
 * After go: memfd contents, size, offset and name; eventfd counts and modes;
 * epoll reports exactly the ready targets with their data; the pipe becomes
 * ready once written; the dup'd epoll fd is the same set.
 */
#include "case.h"
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>

int main(int argc, char **argv)
{
	case_init(argc, argv);
	int mfd = memfd_create("crcase-memfd", MFD_CLOEXEC);
	if (mfd < 0)
		case_fail("memfd_create: %s", strerror(errno));
	char buf[20000];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 7 + 3);
	if (write(mfd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
		case_fail("write memfd");
	if (lseek(mfd, 4321, SEEK_SET) != 4321)
		case_fail("lseek memfd");

	int efd = eventfd(5, EFD_CLOEXEC);
	int sfd = eventfd(3, EFD_SEMAPHORE);
	int nfd = eventfd(0, EFD_NONBLOCK);
	int p[2];
	if (efd < 0 || sfd < 0 || nfd < 0 || pipe(p))
		case_fail("eventfd/pipe: %s", strerror(errno));
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x1111222233334444ull};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev))
		case_fail("epoll_ctl efd: %s", strerror(errno));
	ev.events = EPOLLIN | EPOLLET;
	ev.data.u64 = 0xabcdef;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev))
		case_fail("epoll_ctl pipe: %s", strerror(errno));
	int ep2 = dup(ep);
	struct stat mst;
	fstat(mfd, &mst);
	case_log("memfd %d eventfds %d %d %d pipe %d/%d epoll %d dup %d", mfd, efd, sfd, nfd, p[0], p[1], ep, ep2);
	case_ready();
	case_wait_go();

	/* memfd */
	char link[256], path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = 0;
	if (!strstr(link, "memfd:crcase-memfd"))
		case_fail("memfd link is %s", link);
	if (lseek(mfd, 0, SEEK_CUR) != 4321)
		case_fail("memfd offset %ld", (long)lseek(mfd, 0, SEEK_CUR));
	struct stat st;
	fstat(mfd, &st);
	if (st.st_size != (off_t)sizeof(buf))
		case_fail("memfd size %ld", (long)st.st_size);
	char got[sizeof(buf)];
	if (pread(mfd, got, sizeof(got), 0) != (ssize_t)sizeof(got) || memcmp(got, buf, sizeof(buf)))
		case_fail("memfd contents differ");
	if (!(fcntl(mfd, F_GETFD) & FD_CLOEXEC))
		case_fail("memfd lost FD_CLOEXEC");

	/* epoll: only the eventfd (count 5) is ready, with its data */
	struct epoll_event evs[4];
	int k = epoll_wait(ep, evs, 4, 0);
	if (k != 1 || evs[0].data.u64 != 0x1111222233334444ull)
		case_fail("epoll_wait: %d events, data %llx", k, k > 0 ? (unsigned long long)evs[0].data.u64 : 0ull);
	if (write(p[1], "z", 1) != 1)
		case_fail("write pipe");
	k = epoll_wait(ep2, evs, 4, 0);
	int seen_pipe = 0;
	for (int i = 0; i < k; i++)
		if (evs[i].data.u64 == 0xabcdef)
			seen_pipe = 1;
	if (k != 2 || !seen_pipe)
		case_fail("after pipe write: %d events, pipe seen %d", k, seen_pipe);

	/* eventfds */
	uint64_t v = 0;
	if (read(efd, &v, 8) != 8 || v != 5)
		case_fail("eventfd count %llu", (unsigned long long)v);
	for (int i = 0; i < 3; i++)
		if (read(sfd, &v, 8) != 8 || v != 1)
			case_fail("semaphore eventfd read %d gave %llu", i, (unsigned long long)v);
	if (!(fcntl(sfd, F_GETFL) & O_NONBLOCK)) {
		/* blocking semaphore at 0: do not read again */
	}
	if (read(nfd, &v, 8) != -1 || errno != EAGAIN)
		case_fail("non-blocking eventfd read did not give EAGAIN");
	if (!(fcntl(efd, F_GETFD) & FD_CLOEXEC) || (fcntl(sfd, F_GETFD) & FD_CLOEXEC))
		case_fail("eventfd close-on-exec flags changed");
	case_pass();
}

/*
 * e_epoll: an epoll set (fd 30) whose targets moved after registration.
 *   0xA: eventfd A registered at fd 20, then dup'd to 21 and fd 20 closed;
 *   0xB: a pipe's read end registered at fd 22, dup'd to 23, fd 22 closed
 *        and the number reused by eventfd B;
 *   0xD: eventfd B registered at fd 22 too (two registrations on fd 22);
 *   0xC: eventfd C at fd 25, registered normally (edge-triggered).
 * After go: nothing is ready; each write makes exactly its own
 * registration ready with its data; fd 22's registration is B's (DEL
 * removes it, a second DEL finds nothing); the pipe's stays.
 */
#define _GNU_SOURCE
#include "case.h"

#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#define EP 30

static void reg(int fd, uint32_t events, uint64_t data)
{
	struct epoll_event ev = { .events = events, .data.u64 = data };

	CHECK(epoll_ctl(EP, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll_ctl ADD %d: %s", fd, strerror(errno));
}

static void put(int fd, int at)
{
	CHECK(dup2(fd, at) == at, "dup2 %d: %s", at, strerror(errno));
	close(fd);
}

/* expect exactly one ready registration, with data want (0: none) */
static void expect(uint64_t want, const char *what)
{
	struct epoll_event evs[8];
	int n = epoll_wait(EP, evs, 8, want ? 2000 : 0);

	if (want == 0) {
		CHECK(n == 0, "%s: %d event(s) ready (data %#llx), want none", what, n,
		      n > 0 ? (unsigned long long)evs[0].data.u64 : 0ull);
		return;
	}
	CHECK(n == 1, "%s: %d event(s) ready, want one", what, n);
	CHECK(evs[0].data.u64 == want, "%s: data %#llx, want %#llx", what, (unsigned long long)evs[0].data.u64,
	      (unsigned long long)want);
}

int main(int argc, char **argv)
{
	uint64_t one = 1, v;
	int p[2];
	char c;

	case_init(argc, argv);
	put(epoll_create1(EPOLL_CLOEXEC), EP);
	put(eventfd(0, 0), 20);
	reg(20, EPOLLIN, 0xA);
	CHECK(dup2(20, 21) == 21, "dup2: %s", strerror(errno));
	close(20);
	CHECK(pipe(p) == 0, "pipe: %s", strerror(errno));
	put(p[0], 22);
	put(p[1], 24);
	reg(22, EPOLLIN, 0xB);
	CHECK(dup2(22, 23) == 23, "dup2: %s", strerror(errno));
	close(22);
	put(eventfd(0, 0), 22);
	reg(22, EPOLLIN, 0xD);
	put(eventfd(0, EFD_CLOEXEC), 25);
	reg(25, EPOLLIN | EPOLLET, 0xC);
	case_log("epoll set %d: targets moved after registration", EP);

	case_ready();
	case_wait_go();

	expect(0, "after restore");
	CHECK(write(21, &one, 8) == 8, "write A: %s", strerror(errno));
	expect(0xA, "eventfd A (registered at fd 20, now at 21)");
	CHECK(read(21, &v, 8) == 8, "read A: %s", strerror(errno));
	expect(0, "after reading A");
	CHECK(write(24, "x", 1) == 1, "write pipe: %s", strerror(errno));
	expect(0xB, "pipe (registered at fd 22, now at 23)");
	CHECK(read(23, &c, 1) == 1, "read pipe: %s", strerror(errno));
	CHECK(write(22, &one, 8) == 8, "write B: %s", strerror(errno));
	expect(0xD, "eventfd B at fd 22");
	CHECK(epoll_ctl(EP, EPOLL_CTL_DEL, 22, NULL) == 0, "DEL fd 22 (B): %s", strerror(errno));
	CHECK(epoll_ctl(EP, EPOLL_CTL_DEL, 22, NULL) < 0 && errno == ENOENT, "second DEL fd 22 did not say ENOENT");
	expect(0, "after DEL of B");
	CHECK(write(25, &one, 8) == 8, "write C: %s", strerror(errno));
	expect(0xC, "eventfd C (edge-triggered)");
	expect(0, "C again (edge-triggered)");
	CHECK(write(24, "y", 1) == 1, "write pipe: %s", strerror(errno));
	expect(0xB, "pipe again");
	case_pass();
}

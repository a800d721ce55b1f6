/*
 * b_unsupfd: holds a SOCK_PACKET packet socket (fd 42), a kind the engine refuses,
 * and a unix socketpair (fds 43, 44) with a queued message. Used by
 * TestNegative_UnsupportedFD: the dump must fail naming fd 42 and leave this
 * process running undisturbed, so after "go" it checks from inside that the
 * socketpair still works and still holds the unread message queued before
 * "ready" (a dump that peeked it must not have consumed it).
 *
 * The fds are dup2'ed to fixed numbers so the test can expect the fd number
 * in the error message; it prints them too.
 */
#define _GNU_SOURCE
#include "case.h"

#include <errno.h>
#include <sys/socket.h>

/* CHECK fails the case (case_fail exits) unless cond holds. */
#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#define PACKET 42
#define SOCK_A 43
#define SOCK_B 44

int main(int argc, char **argv)
{
	int sv[2];
	char buf[64];

	case_init(argc, argv);
	int pk = socket(AF_PACKET, SOCK_PACKET, 0); /* the obsolete SOCK_PACKET: refused */
	CHECK(pk >= 0 && dup2(pk, PACKET) == PACKET, "packet socket: %s", strerror(errno));
	close(pk);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair: %s",
	      strerror(errno));
	CHECK(dup2(sv[0], SOCK_A) == SOCK_A && dup2(sv[1], SOCK_B) == SOCK_B,
	      "dup2: %s", strerror(errno));
	close(sv[0]);
	close(sv[1]);

	/* one message left queued across the (failed) dump */
	CHECK(write(SOCK_A, "queued", 6) == 6, "write: %s", strerror(errno));
	case_log("packet socket on fd %d, unix socketpair on fds %d and %d", PACKET, SOCK_A, SOCK_B);

	case_ready();
	case_wait_go();

	/* MSG_DONTWAIT: a lost message must fail the case, not hang it */
	CHECK(recv(SOCK_B, buf, sizeof buf, MSG_DONTWAIT) == 6 &&
		      !memcmp(buf, "queued", 6),
	      "queued message lost");
	CHECK(send(SOCK_B, "pong", 4, MSG_NOSIGNAL) == 4, "send B: %s",
	      strerror(errno));
	CHECK(recv(SOCK_A, buf, sizeof buf, MSG_DONTWAIT) == 4 &&
		      !memcmp(buf, "pong", 4),
	      "B -> A does not work");
	CHECK(send(SOCK_A, "ping", 4, MSG_NOSIGNAL) == 4, "send A: %s",
	      strerror(errno));
	CHECK(recv(SOCK_B, buf, sizeof buf, MSG_DONTWAIT) == 4 &&
		      !memcmp(buf, "ping", 4),
	      "A -> B does not work");
	case_pass();
}

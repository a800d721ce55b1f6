/*
 * b_unix_reset: a seqpacket socket (fd 45) whose peer was closed with data
 * unread: ECONNRESET is pending, and a record "r1" is queued. The dump
 * refuses it (reading the queue would consume the error); after "go" the
 * case checks from inside that nothing was taken: the first read fails
 * with ECONNRESET (record sockets report the error before the queue), then
 * "r1", then EOF. Used by TestNegative_UnixSeqpacketReset.
 */
#define _GNU_SOURCE
#include "case.h"

#include <sys/socket.h>

#define SOCK 45

int main(int argc, char **argv)
{
	int sv[2];
	char buf[16];
	ssize_t n;

	case_init(argc, argv);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0 || dup2(sv[0], SOCK) != SOCK)
		case_fail("socketpair: %s", strerror(errno));
	close(sv[0]);
	if (send(sv[1], "r1", 2, 0) != 2 || send(SOCK, "unread", 6, 0) != 6)
		case_fail("send: %s", strerror(errno));
	close(sv[1]);
	case_ready();
	case_wait_go();

	n = recv(SOCK, buf, sizeof(buf), MSG_DONTWAIT);
	if (n >= 0 || errno != ECONNRESET)
		case_fail("first read: %zd (%s), want ECONNRESET", n, n < 0 ? strerror(errno) : "data");
	n = recv(SOCK, buf, sizeof(buf), MSG_DONTWAIT);
	if (n != 2 || memcmp(buf, "r1", 2) != 0)
		case_fail("second read: %zd, want r1", n);
	n = recv(SOCK, buf, sizeof(buf), MSG_DONTWAIT);
	if (n != 0)
		case_fail("third read: %zd (%s), want EOF", n, n < 0 ? strerror(errno) : "data");
	case_pass();
}

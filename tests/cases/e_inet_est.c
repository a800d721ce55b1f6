/*
 * e_inet_est: holds an established TCP connection over 127.0.0.1, both
 * ends in this process (client on fd 60, accepted end on fd 61), and its
 * listener. Used by TestNegative_InetEstablished: the dump must fail
 * naming fd 60 or 61 and "established", and leave this process running;
 * after "go" it checks that the connection still carries data both ways,
 * including a message queued before "ready".
 * Built with -DWITH_NETLINK it also holds a generic netlink socket on fd 70 (not
 * supported), for TestNegative_TCPDumpFails: with --tcp-established the
 * dump locks and repairs the connection first, then fails on fd 70.
 */
#define _GNU_SOURCE
#include "case.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <linux/netlink.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#define CLIENT 60
#define SERVER 61

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t l = sizeof a;
	char buf[16];
	int ls, c, s;

	case_init(argc, argv);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ls = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(ls >= 0 && bind(ls, (struct sockaddr *)&a, sizeof a) == 0 && listen(ls, 1) == 0, "listener: %s", strerror(errno));
	CHECK(getsockname(ls, (struct sockaddr *)&a, &l) == 0, "getsockname: %s", strerror(errno));
	c = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(c >= 0 && connect(c, (struct sockaddr *)&a, sizeof a) == 0, "connect: %s", strerror(errno));
	s = accept(ls, NULL, NULL);
	CHECK(s >= 0, "accept: %s", strerror(errno));
	CHECK(dup2(c, CLIENT) == CLIENT && dup2(s, SERVER) == SERVER, "dup2: %s", strerror(errno));
	close(c);
	close(s);
	CHECK(write(CLIENT, "queued", 6) == 6, "write: %s", strerror(errno));
#ifdef WITH_NETLINK
	{
		int nl = socket(AF_NETLINK, SOCK_RAW, NETLINK_GENERIC); /* refused: generic netlink */

		CHECK(nl >= 0 && dup2(nl, 70) == 70, "netlink socket: %s", strerror(errno));
		close(nl);
	}
#endif
	case_log("established connection on fds %d and %d (port %d)", CLIENT, SERVER, ntohs(a.sin_port));

	case_ready();
	case_wait_go();

	CHECK(recv(SERVER, buf, sizeof buf, MSG_DONTWAIT) == 6 && !memcmp(buf, "queued", 6), "queued data lost");
	CHECK(write(SERVER, "pong", 4) == 4 && recv(CLIENT, buf, sizeof buf, 0) == 4 && !memcmp(buf, "pong", 4),
	      "server -> client does not work");
	case_pass();
}

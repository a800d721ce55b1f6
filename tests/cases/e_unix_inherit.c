/*
 * e_unix_inherit: fd 3 is one end of a stream socketpair whose other end
 * the test holds: a unix peer outside the dump that has no name (a parent
 * handing a child one end of a pair). It is dumped with --ext-unix-sk and
 * each restore hands in a fresh pair's end (--inherit-fd
 * fd[3]:socket:[INO]).
 *
 * Before ready the case sends "hello 0" (left in the first pair: the test
 * reads it from there). After go it checks that fd 3 is still a connected
 * unix stream socket with the same flags, sends "hello 1", reads the line
 * the test sent into the last pair ("ping") and answers "pong".
 */
#include "case.h"

#include <fcntl.h>
#include <sys/socket.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

static void check_sock(int want_flags)
{
	int v = 0;
	socklen_t len = sizeof(v);
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);

	CHECK(getsockopt(3, SOL_SOCKET, SO_DOMAIN, &v, &len) == 0 &&
		      v == AF_UNIX,
	      "fd 3: not a unix socket (domain %d): %s", v, strerror(errno));
	len = sizeof(v);
	CHECK(getsockopt(3, SOL_SOCKET, SO_TYPE, &v, &len) == 0 &&
		      v == SOCK_STREAM,
	      "fd 3: type %d, want SOCK_STREAM", v);
	CHECK(getpeername(3, (struct sockaddr *)&peer, &plen) == 0,
	      "fd 3: not connected: %s", strerror(errno));
	CHECK(fcntl(3, F_GETFL) == want_flags, "fd 3: flags %#o, want %#o",
	      fcntl(3, F_GETFL), want_flags);
}

static void send_line(const char *s)
{
	size_t n = strlen(s);

	CHECK(write(3, s, n) == (ssize_t)n, "send %s: %s", s, strerror(errno));
}

int main(int argc, char **argv)
{
	char buf[64];
	ssize_t n;
	int flags;

	case_init(argc, argv);
	flags = fcntl(3, F_GETFL);
	check_sock(flags);
	send_line("hello 0\n");
	case_ready();

	case_wait_go();
	check_sock(flags);
	send_line("hello 1\n");
	n = read(3, buf, sizeof(buf) - 1);
	CHECK(n == 5 && memcmp(buf, "ping\n", 5) == 0,
	      "read %zd bytes, want \"ping\\n\": %s", n, strerror(errno));
	send_line("pong\n");
	case_pass();
	return 0;
}

/*
 * e_unix_ext: a unix stream socket (fd 40) connected to a listener outside
 * the dumped process: the abstract name in $CTRCR_EXT_SK, served by the
 * test. It sends "hello" before ready. After go it sends "again" and waits
 * (10 s at most) for the server's "reply" on the same socket: after a
 * restore with --ext-unix-sk that is a new connection to the same name.
 */
#include "case.h"

#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

int main(int argc, char **argv)
{
	const char *name = getenv("CTRCR_EXT_SK");
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char buf[16] = { 0 };

	case_init(argc, argv);
	if (!name || name[0] != '@' || strlen(name) >= sizeof(a.sun_path))
		case_fail("CTRCR_EXT_SK must be an abstract name (@...)");
	memcpy(a.sun_path + 1, name + 1, strlen(name) - 1);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || dup2(fd, 40) != 40)
		case_fail("socket: %s", strerror(errno));
	close(fd);
	if (connect(40, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + strlen(name)) < 0)
		case_fail("connect %s: %s", name, strerror(errno));
	if (send(40, "hello", 5, 0) != 5)
		case_fail("send hello: %s", strerror(errno));
	case_ready();
	case_wait_go();

	if (send(40, "again", 5, MSG_NOSIGNAL) != 5)
		case_fail("send again: %s", strerror(errno));
	struct pollfd p = { 40, POLLIN, 0 };
	if (poll(&p, 1, 10000) != 1)
		case_fail("no reply from the outside listener");
	if (recv(40, buf, sizeof(buf), MSG_DONTWAIT) != 5 || memcmp(buf, "reply", 5))
		case_fail("reply: got %s", buf);
	case_pass();
}

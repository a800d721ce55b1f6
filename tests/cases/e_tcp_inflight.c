/*
 * e_tcp_inflight: a TCP listener (fd 60) with a connection waiting in its
 * accept queue, never accepted; the connecting client (fd 61) is in the
 * tree. Dumped with --skip-in-flight --tcp-established (CRIU's "skip
 * in-flight connections"): the restored listener has an empty accept
 * queue, and the client, restored as the established connection it was,
 * has no server side any more: the first segment it sends meets the
 * listener, which answers with a reset, so it sees ECONNRESET. The
 * listener accepts a new connection. Without --skip-in-flight the dump is
 * refused naming the flag (TestNegative_TCPInFlight).
 */
#include "case.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#define LFD 60
#define CFD 61

static void moveto(int fd, int to)
{
	if (dup2(fd, to) != to)
		case_fail("dup2 %d: %s", to, strerror(errno));
	close(fd);
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	struct pollfd p;
	char buf[16];
	int l, c, n, nc, ac;

	case_init(argc, argv);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (void *)&a, sizeof(a)) || listen(l, 4) ||
	    getsockname(l, (void *)&a, &al))
		case_fail("listener: %s", strerror(errno));
	moveto(l, LFD);
	c = socket(AF_INET, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (void *)&a, sizeof(a)))
		case_fail("connect: %s", strerror(errno));
	if (write(c, "hello", 5) != 5)
		case_fail("write: %s", strerror(errno));
	moveto(c, CFD);
	p = (struct pollfd){ .fd = LFD, .events = POLLIN };
	if (poll(&p, 1, 5000) != 1)
		case_fail("the connection never reached the accept queue");
	case_ready();
	case_wait_go();
#ifdef REFUSED
	/* the dump was refused: the connection is still waiting */
	p = (struct pollfd){ .fd = LFD, .events = POLLIN };
	if (poll(&p, 1, 0) != 1 || (ac = accept4(LFD, NULL, NULL, 0)) < 0)
		case_fail("the waiting connection is gone after a refused dump");
	if (read(ac, buf, sizeof(buf)) != 5 || memcmp(buf, "hello", 5))
		case_fail("the waiting connection lost its data");
	case_pass();
#endif

	/* the accept queue is empty: the in-flight connection was skipped */
	p = (struct pollfd){ .fd = LFD, .events = POLLIN };
	if ((n = poll(&p, 1, 0)) != 0)
		case_fail("listener: poll %d (revents %#x): the skipped connection is still queued", n, p.revents);
	fcntl(LFD, F_SETFL, O_NONBLOCK);
	if (accept4(LFD, NULL, NULL, 0) >= 0 || errno != EAGAIN)
		case_fail("listener: accept of the skipped connection: %s", strerror(errno));
	fcntl(LFD, F_SETFL, 0);

	/* the client: established until it talks, then reset by the listener */
	if (getpeername(CFD, (void *)&(struct sockaddr_in){ 0 }, &(socklen_t){ sizeof(struct sockaddr_in) }))
		case_fail("client: getpeername: %s (want the established connection)", strerror(errno));
	if ((n = send(CFD, "x", 1, MSG_NOSIGNAL)) != 1)
		case_fail("client: send: %d %s (want 1: the reset comes after)", n, strerror(errno));
	p = (struct pollfd){ .fd = CFD, .events = POLLIN };
	if (poll(&p, 1, 5000) != 1 || !(p.revents & POLLERR))
		case_fail("client: no reset after sending (revents %#x)", p.revents);
	if ((n = read(CFD, buf, sizeof(buf))) != -1 || errno != ECONNRESET)
		case_fail("client: read %d %s, want ECONNRESET", n, n < 0 ? strerror(errno) : "");

	/* the listener takes new connections */
	nc = socket(AF_INET, SOCK_STREAM, 0);
	if (nc < 0 || connect(nc, (void *)&a, sizeof(a)))
		case_fail("new connection: %s", strerror(errno));
	if ((ac = accept4(LFD, NULL, NULL, 0)) < 0)
		case_fail("accept of the new connection: %s", strerror(errno));
	if (write(nc, "ping", 4) != 4 || read(ac, buf, sizeof(buf)) != 4 || memcmp(buf, "ping", 4))
		case_fail("new connection: data does not pass");
	case_pass();
}

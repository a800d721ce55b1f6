/*
 * e_tcp_close: TCP connections dumped with --tcp-close and restored with
 * --tcp-close come back as CRIU gives them: closed sockets (unbound, shut
 * down both ways) with their options. Both ends of an established
 * connection with data queued each way (fds 60, 61), and both ends of a
 * half-closed one (62 in CLOSE_WAIT, 63 in FIN_WAIT2). Each one: read
 * gives end of file, send EPIPE (write: EPIPE and SIGPIPE), poll POLLHUP
 * and POLLRDHUP, getpeername ENOTCONN, no pending error; TCP_NODELAY set
 * on 60 is kept. The listener (fd 59) is restored as it was and accepts a
 * new connection. Built with -DENDED (dumped with --tcp-close: CRIU's
 * "connections once established but now closed"), two connections that
 * ended before the dump come back the same way: 64 reset by its peer (the
 * error read), 65 finished (FIN both ways).
 */
#include "case.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#define LFD 59

static volatile sig_atomic_t pipes;

static void onpipe(int sig)
{
	(void)sig;
	pipes++;
}

static void moveto(int fd, int to)
{
	if (dup2(fd, to) != to)
		case_fail("dup2 %d: %s", to, strerror(errno));
	close(fd);
}

static void pair(struct sockaddr_in *a, int cfd, int afd)
{
	int c = socket(AF_INET, SOCK_STREAM, 0), s;

	if (c < 0 || connect(c, (void *)a, sizeof(*a)))
		case_fail("connect: %s", strerror(errno));
	if ((s = accept4(LFD, NULL, NULL, 0)) < 0)
		case_fail("accept: %s", strerror(errno));
	moveto(c, cfd);
	moveto(s, afd);
}

static void check_closed(int fd)
{
	struct sockaddr_in pa;
	socklen_t pl = sizeof(pa);
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT | POLLRDHUP };
	char buf[8];
	int n, err = -1, before = pipes;

	if ((n = read(fd, buf, sizeof(buf))) != 0)
		case_fail("fd %d: read %d %s, want 0 (end of file)", fd, n, n < 0 ? strerror(errno) : "");
	if ((n = send(fd, "x", 1, MSG_NOSIGNAL)) != -1 || errno != EPIPE)
		case_fail("fd %d: send %d %s, want EPIPE", fd, n, strerror(errno));
	if ((n = write(fd, "x", 1)) != -1 || errno != EPIPE || pipes != before + 1)
		case_fail("fd %d: write %d %s, SIGPIPE %d, want EPIPE and one SIGPIPE", fd, n, strerror(errno), pipes - before);
	if (poll(&p, 1, 0) != 1 || !(p.revents & POLLHUP) || !(p.revents & POLLRDHUP))
		case_fail("fd %d: poll revents %#x, want POLLHUP|POLLRDHUP", fd, p.revents);
	if (getpeername(fd, (void *)&pa, &pl) != -1 || errno != ENOTCONN)
		case_fail("fd %d: getpeername: %s, want ENOTCONN", fd, strerror(errno));
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &(socklen_t){ sizeof(err) }) || err != 0)
		case_fail("fd %d: SO_ERROR %d", fd, err);
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	char buf[8];
	int l, one = 1, v = 0, nc, ac, fd;
#ifdef ENDED
	struct tcp_info ti;
#endif

	case_init(argc, argv);
	signal(SIGPIPE, onpipe);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (void *)&a, sizeof(a)) || listen(l, 4) ||
	    getsockname(l, (void *)&a, &al))
		case_fail("listener: %s", strerror(errno));
	moveto(l, LFD);
	pair(&a, 60, 61);
	if (setsockopt(60, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)))
		case_fail("TCP_NODELAY: %s", strerror(errno));
	if (write(60, "abc", 3) != 3 || write(61, "xyz", 3) != 3)
		case_fail("write: %s", strerror(errno));
	pair(&a, 62, 63);
	if (shutdown(63, SHUT_WR))
		case_fail("shutdown: %s", strerror(errno));
#ifdef ENDED
	pair(&a, 64, 66);
	if (setsockopt(66, SOL_SOCKET, SO_LINGER, &(struct linger){ 1, 0 }, sizeof(struct linger)))
		case_fail("SO_LINGER: %s", strerror(errno));
	close(66); /* reset */
	pair(&a, 65, 66);
	if (shutdown(65, SHUT_WR))
		case_fail("shutdown: %s", strerror(errno));
	case_sleep_ms(50);
	close(66); /* finished: 65 goes through TIME_WAIT */
	case_sleep_ms(50);
	if (read(64, buf, sizeof(buf)) != -1 || errno != ECONNRESET)
		case_fail("fd 64: not reset: %s", strerror(errno));
	if (read(65, buf, sizeof(buf)) != 0)
		case_fail("fd 65: no end of file");
	if (getsockopt(65, IPPROTO_TCP, TCP_INFO, &ti, &(socklen_t){ sizeof(ti) }) || ti.tcpi_state != TCP_CLOSE)
		case_fail("fd 65: state %d, want CLOSE", ti.tcpi_state);
#endif
	case_sleep_ms(50);
	case_ready();
	case_wait_go();

	for (fd = 60; fd <= 63; fd++)
		check_closed(fd);
#ifdef ENDED
	check_closed(64);
	check_closed(65);
#endif
	if (getsockopt(60, IPPROTO_TCP, TCP_NODELAY, &v, &(socklen_t){ sizeof(v) }) || v != 1)
		case_fail("fd 60: TCP_NODELAY %d, want 1", v);
	nc = socket(AF_INET, SOCK_STREAM, 0);
	if (nc < 0 || connect(nc, (void *)&a, sizeof(a)))
		case_fail("new connection: %s", strerror(errno));
	if ((ac = accept4(LFD, NULL, NULL, 0)) < 0)
		case_fail("accept of the new connection: %s", strerror(errno));
	if (write(nc, "ping", 4) != 4 || read(ac, buf, sizeof(buf)) != 4 || memcmp(buf, "ping", 4))
		case_fail("new connection: data does not pass");
	case_pass();
}

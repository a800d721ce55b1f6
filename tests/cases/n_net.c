/*
 * n_net: a process in a network namespace of its own, made by itself
 * (unshare(CLONE_NEWNET), as under `unshare --net`), nobody else in it
 * and no name for it: the image carries the namespace (its links,
 * addresses, routes) and restore creates it again around the process.
 *
 * Before ready: lo up; a TCP listener on 127.0.0.1:7000 and a connection
 * to it, accepted (both ends here, the harness dumps with
 * --tcp-established), with "ping" sent and not read; a UDP socket bound to
 * 127.0.0.1:7001 with nothing queued. The test adds, from outside, a dummy
 * veth pair `ctrdummy0`-`ctrdummy1` (both ends inside), ctrdummy0 with
 * 192.0.2.1/24, up, before the first dump (its
 * BeforeDump), and the case checks it after go.
 *
 * After go: lo is up (ifindex 1); ctrdummy0 exists with its address; the
 * accepted end reads "ping", answers "pong" and the client reads it; a
 * new client connects to the listener and is accepted; a datagram sent to
 * the UDP socket arrives.
 */
#include "case.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

static struct sockaddr_in addr_of(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons(port)};

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static int if_flags(int s, const char *name)
{
	struct ifreq ifr = {0};

	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	CHECK(ioctl(s, SIOCGIFFLAGS, &ifr) == 0, "SIOCGIFFLAGS %s: %s", name,
	      strerror(errno));
	return ifr.ifr_flags;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = addr_of(7000), u = addr_of(7001);
	struct ifreq ifr = {0};
	char buf[16];
	int s, lst, cli, srv, udp, c2, one = 1;

	case_init(argc, argv);
	CHECK(unshare(CLONE_NEWNET) == 0, "unshare: %s", strerror(errno));
	s = socket(AF_INET, SOCK_DGRAM, 0);
	CHECK(s >= 0, "socket: %s", strerror(errno));
	strcpy(ifr.ifr_name, "lo");
	ifr.ifr_flags = if_flags(s, "lo") | IFF_UP;
	CHECK(ioctl(s, SIOCSIFFLAGS, &ifr) == 0, "lo up: %s", strerror(errno));

	lst = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(lst >= 0, "socket: %s", strerror(errno));
	setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	CHECK(bind(lst, (void *)&a, sizeof(a)) == 0, "bind: %s",
	      strerror(errno));
	CHECK(listen(lst, 8) == 0, "listen: %s", strerror(errno));
	cli = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(connect(cli, (void *)&a, sizeof(a)) == 0, "connect: %s",
	      strerror(errno));
	srv = accept(lst, NULL, NULL);
	CHECK(srv >= 0, "accept: %s", strerror(errno));
	CHECK(write(cli, "ping", 4) == 4, "write: %s", strerror(errno));
	udp = socket(AF_INET, SOCK_DGRAM, 0);
	CHECK(bind(udp, (void *)&u, sizeof(u)) == 0, "bind udp: %s",
	      strerror(errno));

	case_ready();
	case_wait_go();

	CHECK(if_nametoindex("lo") == 1, "lo is ifindex %u",
	      if_nametoindex("lo"));
	CHECK(if_flags(s, "lo") & IFF_UP, "lo is down");
	CHECK(if_nametoindex("ctrdummy0") > 0, "no ctrdummy0");
	CHECK(if_flags(s, "ctrdummy0") & IFF_UP, "ctrdummy0 is down");
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "ctrdummy0");
	CHECK(ioctl(s, SIOCGIFADDR, &ifr) == 0, "SIOCGIFADDR: %s",
	      strerror(errno));
	CHECK(((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr.s_addr ==
		      inet_addr("192.0.2.1"),
	      "ctrdummy0 address %s",
	      inet_ntoa(((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr));

	memset(buf, 0, sizeof(buf));
	CHECK(read(srv, buf, sizeof(buf)) == 4 && memcmp(buf, "ping", 4) == 0,
	      "server read %s (%s)", buf, strerror(errno));
	CHECK(write(srv, "pong", 4) == 4, "write pong: %s", strerror(errno));
	memset(buf, 0, sizeof(buf));
	CHECK(read(cli, buf, sizeof(buf)) == 4 && memcmp(buf, "pong", 4) == 0,
	      "client read %s (%s)", buf, strerror(errno));

	c2 = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(connect(c2, (void *)&a, sizeof(a)) == 0, "connect again: %s",
	      strerror(errno));
	CHECK(accept(lst, NULL, NULL) >= 0, "accept again: %s",
	      strerror(errno));
	CHECK(sendto(s, "dgram", 5, 0, (void *)&u, sizeof(u)) ==
		      5,
	      "sendto: %s", strerror(errno));
	memset(buf, 0, sizeof(buf));
	CHECK(recv(udp, buf, sizeof(buf), 0) == 5 &&
		      memcmp(buf, "dgram", 5) == 0,
	      "udp recv %s (%s)", buf, strerror(errno));
	case_pass();
}

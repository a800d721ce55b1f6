/*
 * e_inet_kinds: raw, ping and UDP-lite sockets survive C/R (run in a
 * network namespace of its own).
 *
 *   fd 50  raw ICMP, bound to 127.0.0.1, connected to 127.0.0.2, ICMP_FILTER
 *   fd 51  raw IPPROTO_RAW (IP_HDRINCL on by default)
 *   fd 52  raw ICMPv6 with an ICMPV6_FILTER passing echo replies only
 *   fd 53  raw IPv6 protocol 253 with IPV6_CHECKSUM 4
 *   fd 54  ping socket made as group 1000 with net.ipv4.ping_group_range
 *          "1000 1000" (root's group 0 may not), bound to 127.0.0.1,
 *          identifier 777
 *   fd 55  UDP-lite on 127.0.0.1 with UDPLITE_SEND_CSCOV/RECV_CSCOV 20
 *   fd 56  raw ICMP with an ICMP_FILTER passing echo replies only
 *
 * After "go": names, peers and options as before; a ping through fd 54 is
 * answered, with identifier 777, and fd 56 sees the echo reply but not the
 * request; a UDP-lite datagram fd 55 sends itself arrives.
 */
#define _GNU_SOURCE
#include "case.h"

#include <arpa/inet.h>
#include <linux/icmp.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <poll.h>
#include <sys/socket.h>

#ifndef IPPROTO_UDPLITE
#define IPPROTO_UDPLITE 136
#endif
#define SOL_UDPLITE 136
#define UDPLITE_SEND_CSCOV 10
#define UDPLITE_RECV_CSCOV 11

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

static int at(int fd, int want)
{
	CHECK(fd >= 0, "socket for fd %d: %s", want, strerror(errno));
	CHECK(dup2(fd, want) == want, "dup2: %s", strerror(errno));
	close(fd);
	return want;
}

static int getint(int fd, int level, int opt, const char *name)
{
	int v = -1;
	socklen_t l = sizeof v;

	CHECK(getsockopt(fd, level, opt, &v, &l) == 0, "getsockopt %s on fd %d: %s", name, fd, strerror(errno));
	return v;
}

static void setint(int fd, int level, int opt, int v, const char *name)
{
	CHECK(setsockopt(fd, level, opt, &v, sizeof v) == 0, "setsockopt %s on fd %d: %s", name, fd, strerror(errno));
}

static struct sockaddr_in a4(const char *a, int port)
{
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_port = htons(port) };

	inet_pton(AF_INET, a, &s.sin_addr);
	return s;
}

static struct sockaddr_storage names[7], peers[7];

static void record(int i, struct sockaddr_storage *n, struct sockaddr_storage *p)
{
	socklen_t l = sizeof *n;

	memset(n, 0, sizeof *n);
	memset(p, 0, sizeof *p);
	CHECK(getsockname(50 + i, (struct sockaddr *)n, &l) == 0, "getsockname fd %d: %s", 50 + i, strerror(errno));
	l = sizeof *p;
	getpeername(50 + i, (struct sockaddr *)p, &l);
}

int main(int argc, char **argv)
{
	struct sockaddr_in lo = a4("127.0.0.1", 0), lo2 = a4("127.0.0.2", 0), p54 = a4("127.0.0.1", 777), got;
	struct icmp6_filter f6, g6;
	struct icmphdr echo = { .type = ICMP_ECHO }, *reply;
	char buf[256];
	struct pollfd pf;
	socklen_t l;
	int i, fd, n;
	FILE *f;

	case_init(argc, argv);
	at(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), 50);
	setint(50, SOL_RAW, ICMP_FILTER, 1 << ICMP_ECHO, "ICMP_FILTER");
	CHECK(bind(50, (struct sockaddr *)&lo, sizeof lo) == 0, "bind fd 50: %s", strerror(errno));
	CHECK(connect(50, (struct sockaddr *)&lo2, sizeof lo2) == 0, "connect fd 50: %s", strerror(errno));
	at(socket(AF_INET, SOCK_RAW, IPPROTO_RAW), 51);
	at(socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6), 52);
	ICMP6_FILTER_SETBLOCKALL(&f6);
	ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &f6);
	CHECK(setsockopt(52, SOL_ICMPV6, ICMP6_FILTER, &f6, sizeof f6) == 0, "ICMPV6_FILTER: %s", strerror(errno));
	at(socket(AF_INET6, SOCK_RAW, 253), 53);
	setint(53, SOL_IPV6, IPV6_CHECKSUM, 4, "IPV6_CHECKSUM");

	f = fopen("/proc/sys/net/ipv4/ping_group_range", "w");
	CHECK(f && fputs("1000 1000", f) >= 0 && fclose(f) == 0, "ping_group_range: %s", strerror(errno));
	CHECK(setegid(1000) == 0, "setegid: %s", strerror(errno));
	fd = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
	CHECK(setegid(0) == 0, "setegid back: %s", strerror(errno));
	at(fd, 54);
	CHECK(bind(54, (struct sockaddr *)&p54, sizeof p54) == 0, "bind fd 54: %s", strerror(errno));
	CHECK(socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP) == -1 && errno == EACCES, "root may make ping sockets: the test proves nothing");

	at(socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE), 55);
	setint(55, SOL_UDPLITE, UDPLITE_SEND_CSCOV, 20, "UDPLITE_SEND_CSCOV");
	setint(55, SOL_UDPLITE, UDPLITE_RECV_CSCOV, 20, "UDPLITE_RECV_CSCOV");
	CHECK(bind(55, (struct sockaddr *)&lo, sizeof lo) == 0, "bind fd 55: %s", strerror(errno));
	at(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), 56);
	setint(56, SOL_RAW, ICMP_FILTER, ~(1 << ICMP_ECHOREPLY), "ICMP_FILTER");
	for (i = 0; i < 7; i++)
		record(i, &names[i], &peers[i]);

	case_ready();
	case_wait_go();

	for (i = 0; i < 7; i++) {
		struct sockaddr_storage nn, pp;

		record(i, &nn, &pp);
		CHECK(!memcmp(&nn, &names[i], sizeof nn), "fd %d: another name", 50 + i);
		CHECK(!memcmp(&pp, &peers[i], sizeof pp), "fd %d: another peer", 50 + i);
	}
	CHECK(getint(50, SOL_RAW, ICMP_FILTER, "ICMP_FILTER") == 1 << ICMP_ECHO, "fd 50: ICMP_FILTER lost");
	CHECK(getint(51, SOL_IP, IP_HDRINCL, "IP_HDRINCL") == 1, "fd 51: IP_HDRINCL off");
	CHECK(getint(51, SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL") == IPPROTO_RAW, "fd 51: protocol");
	l = sizeof g6;
	CHECK(getsockopt(52, SOL_ICMPV6, ICMP6_FILTER, &g6, &l) == 0 && !memcmp(&f6, &g6, sizeof f6), "fd 52: ICMPV6_FILTER lost");
	CHECK(getint(53, SOL_IPV6, IPV6_CHECKSUM, "IPV6_CHECKSUM") == 4, "fd 53: IPV6_CHECKSUM lost");
	CHECK(getint(53, SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL") == 253, "fd 53: protocol");
	CHECK(getint(55, SOL_UDPLITE, UDPLITE_SEND_CSCOV, "UDPLITE_SEND_CSCOV") == 20 &&
	      getint(55, SOL_UDPLITE, UDPLITE_RECV_CSCOV, "UDPLITE_RECV_CSCOV") == 20, "fd 55: checksum coverage lost");
	CHECK(getint(56, SOL_RAW, ICMP_FILTER, "ICMP_FILTER") == ~(1 << ICMP_ECHOREPLY), "fd 56: ICMP_FILTER lost");

	/* ping through fd 54 */
	echo.un.echo.sequence = htons(1);
	CHECK(sendto(54, &echo, sizeof echo, 0, (struct sockaddr *)&lo, sizeof lo) == sizeof echo, "ping: %s", strerror(errno));
	pf = (struct pollfd){ .fd = 54, .events = POLLIN };
	CHECK(poll(&pf, 1, 3000) == 1, "no echo reply on fd 54");
	n = recv(54, buf, sizeof buf, 0);
	reply = (struct icmphdr *)buf;
	CHECK(n >= (int)sizeof *reply && reply->type == ICMP_ECHOREPLY && ntohs(reply->un.echo.id) == 777,
	      "fd 54: reply of %d bytes, type %d, id %d", n, reply->type, ntohs(reply->un.echo.id));
	/* fd 56 saw the reply (after the IP header) and not the request */
	pf = (struct pollfd){ .fd = 56, .events = POLLIN };
	CHECK(poll(&pf, 1, 3000) == 1, "fd 56 saw nothing");
	n = recv(56, buf, sizeof buf, 0);
	CHECK(n > 20 && ((struct icmphdr *)(buf + ((struct iphdr *)buf)->ihl * 4))->type == ICMP_ECHOREPLY, "fd 56: not the echo reply");
	CHECK(recv(56, buf, sizeof buf, MSG_DONTWAIT) == -1 && errno == EAGAIN, "fd 56: its filter let another packet through");

	/* a UDP-lite datagram to itself */
	l = sizeof got;
	getsockname(55, (struct sockaddr *)&got, &l);
	CHECK(sendto(55, "lite", 4, 0, (struct sockaddr *)&got, l) == 4, "udplite send: %s", strerror(errno));
	pf = (struct pollfd){ .fd = 55, .events = POLLIN };
	CHECK(poll(&pf, 1, 3000) == 1 && recv(55, buf, sizeof buf, 0) == 4 && !memcmp(buf, "lite", 4), "udplite datagram lost");
	case_pass();
	return 0;
}

/*
 * e_inet_opts: socket options that used to come back different survive
 * C/R, read from inside (run in a network namespace of its own).
 *
 *   fd 50  UDP 127.0.0.1, a classic BPF filter (drops datagrams longer
 *          than 40 bytes, as seen by the filter), SO_LOCK_FILTER, a
 *          multicast membership (239.1.2.3 on lo), SO_TXTIME,
 *          SO_MAX_PACING_RATE and many integer options (table below)
 *   fd 51  UDP [::1] with IPv6 and IPv4-level options, a multicast
 *          membership (ff12::1234 on lo)
 *   fd 52  TCP listener on 127.0.0.1 with TCP_CONGESTION "reno" and TCP
 *          options (TCP_MAXSEG, TCP_QUICKACK, TCP_LINGER2, ...)
 *   fd 53  unbound TCP socket with TCP_CORK, SO_BUF_LOCK, ...
 *
 * Every option of the table is set to a value a fresh socket does not
 * read, and read back before "ready"; after "go" each must read the same.
 * The filter must be the same program and still drop the long datagram.
 */
#define _GNU_SOURCE
#include "case.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/net_tstamp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdint.h>
#include <sys/socket.h>

#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif
#ifndef SO_PREFER_BUSY_POLL
#define SO_PREFER_BUSY_POLL 69
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef IP_RECVERR_RFC4884
#define IP_RECVERR_RFC4884 26
#endif
#ifndef IP_LOCAL_PORT_RANGE
#define IP_LOCAL_PORT_RANGE 51
#endif

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#define U4 50
#define U6 51
#define L4 52
#define T4 53

struct opt {
	int fd, level, opt, val;
	const char *name;
	int saved;
};

static struct opt opts[] = {
	{ U4, SOL_SOCKET, SO_RCVLOWAT, 5, "SO_RCVLOWAT" },
	{ U4, SOL_SOCKET, SO_BUSY_POLL, 50, "SO_BUSY_POLL" },
	{ U4, SOL_SOCKET, SO_PREFER_BUSY_POLL, 1, "SO_PREFER_BUSY_POLL" },
	{ U4, SOL_SOCKET, SO_INCOMING_CPU, 1, "SO_INCOMING_CPU" },
	{ U4, SOL_SOCKET, SO_BUF_LOCK, 3, "SO_BUF_LOCK" },
	{ U4, SOL_SOCKET, SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS" },
	{ U4, SOL_SOCKET, SO_RXQ_OVFL, 1, "SO_RXQ_OVFL" },
	{ U4, SOL_SOCKET, SO_PRIORITY, 3, "SO_PRIORITY" },
	{ U4, SOL_IP, IP_RECVERR, 1, "IP_RECVERR" },
	{ U4, SOL_IP, IP_RECVERR_RFC4884, 1, "IP_RECVERR_RFC4884" },
	{ U4, SOL_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO, "IP_MTU_DISCOVER" },
	{ U4, SOL_IP, IP_FREEBIND, 1, "IP_FREEBIND" },
	{ U4, SOL_IP, IP_MULTICAST_ALL, 0, "IP_MULTICAST_ALL" },
	{ U4, SOL_IP, IP_RECVOPTS, 1, "IP_RECVOPTS" },
	{ U4, SOL_IP, IP_MINTTL, 9, "IP_MINTTL" },
	{ U4, SOL_IP, IP_LOCAL_PORT_RANGE, (40000 | 50000 << 16), "IP_LOCAL_PORT_RANGE" },
	{ U4, IPPROTO_UDP, UDP_CORK, 1, "UDP_CORK" },
	{ U4, IPPROTO_UDP, UDP_SEGMENT, 1000, "UDP_SEGMENT" },
	{ U6, SOL_IPV6, IPV6_RECVERR, 1, "IPV6_RECVERR" },
	{ U6, SOL_IPV6, IPV6_DONTFRAG, 1, "IPV6_DONTFRAG" },
	{ U6, SOL_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE, "IPV6_MTU_DISCOVER" },
	{ U6, SOL_IPV6, IPV6_RECVHOPLIMIT, 1, "IPV6_RECVHOPLIMIT" },
	{ U6, SOL_IPV6, IPV6_RECVRTHDR, 1, "IPV6_RECVRTHDR" },
	{ U6, SOL_IPV6, IPV6_FREEBIND, 1, "IPV6_FREEBIND" },
	{ U6, SOL_IP, IP_TOS, 0x10, "IP_TOS (IPv6 socket)" },
	{ U6, SOL_IP, IP_TTL, 33, "IP_TTL (IPv6 socket)" },
	{ U6, SOL_IP, IP_RECVERR, 1, "IP_RECVERR (IPv6 socket)" },
	{ L4, IPPROTO_TCP, TCP_MAXSEG, 1000, "TCP_MAXSEG" },
	{ L4, IPPROTO_TCP, TCP_QUICKACK, 0, "TCP_QUICKACK" },
	{ L4, IPPROTO_TCP, TCP_LINGER2, 17, "TCP_LINGER2" },
	{ L4, IPPROTO_TCP, TCP_USER_TIMEOUT, 12345, "TCP_USER_TIMEOUT" },
	{ L4, IPPROTO_TCP, TCP_NOTSENT_LOWAT, 4096, "TCP_NOTSENT_LOWAT" },
	{ L4, IPPROTO_TCP, TCP_DEFER_ACCEPT, 5, "TCP_DEFER_ACCEPT" },
	{ L4, IPPROTO_TCP, TCP_FASTOPEN, 7, "TCP_FASTOPEN" },
	{ L4, IPPROTO_TCP, TCP_SAVE_SYN, 1, "TCP_SAVE_SYN" },
	{ L4, IPPROTO_TCP, TCP_INQ, 1, "TCP_INQ" },
	{ L4, IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, 1, "TCP_THIN_LINEAR_TIMEOUTS" },
	{ L4, SOL_IP, IP_TRANSPARENT, 1, "IP_TRANSPARENT" },
	{ T4, IPPROTO_TCP, TCP_CORK, 1, "TCP_CORK" },
	{ T4, IPPROTO_TCP, TCP_QUICKACK, 0, "TCP_QUICKACK" },
	{ T4, SOL_SOCKET, SO_BUF_LOCK, 1, "SO_BUF_LOCK" },
	{ T4, SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1, "IP_BIND_ADDRESS_NO_PORT" },
	{ T4, SOL_SOCKET, SO_TIMESTAMPING, SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_RX_SOFTWARE, "SO_TIMESTAMPING" },
};

#define NOPTS (sizeof opts / sizeof opts[0])

static int getint(int fd, int level, int opt, const char *name)
{
	int v = -1;
	socklen_t l = sizeof v;

	CHECK(getsockopt(fd, level, opt, &v, &l) == 0, "getsockopt %s on fd %d: %s", name, fd, strerror(errno));
	return v;
}

static int at(int fd, int want)
{
	CHECK(fd >= 0, "socket: %s", strerror(errno));
	CHECK(dup2(fd, want) == want, "dup2: %s", strerror(errno));
	close(fd);
	return want;
}

/* accept datagrams up to 40 bytes (as the filter sees them) */
static struct sock_filter prog[] = {
	BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
	BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, 40, 1, 0),
	BPF_STMT(BPF_RET | BPF_K, 0xffff),
	BPF_STMT(BPF_RET | BPF_K, 0),
};

static void check_filter(void)
{
	struct sock_filter got[16];
	socklen_t n = 16;

	CHECK(getsockopt(U4, SOL_SOCKET, SO_GET_FILTER, got, &n) == 0, "SO_GET_FILTER: %s", strerror(errno));
	CHECK(n == sizeof prog / sizeof prog[0], "filter has %u instructions, want %zu", n, sizeof prog / sizeof prog[0]);
	CHECK(!memcmp(got, prog, sizeof prog), "filter program differs");
	CHECK(getint(U4, SOL_SOCKET, SO_LOCK_FILTER, "SO_LOCK_FILTER") == 1, "SO_LOCK_FILTER lost");
}

/* the filter drops a long datagram and lets a short one through */
static void check_filter_works(void)
{
	struct sockaddr_in a;
	socklen_t l = sizeof a;
	char big[200], buf[256];
	struct pollfd p = { .fd = U4, .events = POLLIN };
	int c = socket(AF_INET, SOCK_DGRAM, 0);
	ssize_t n;
	int lowat = getint(U4, SOL_SOCKET, SO_RCVLOWAT, "SO_RCVLOWAT");

	(void)lowat;
	CHECK(getsockname(U4, (struct sockaddr *)&a, &l) == 0, "getsockname: %s", strerror(errno));
	memset(big, 'B', sizeof big);
	CHECK(sendto(c, big, sizeof big, 0, (struct sockaddr *)&a, l) == sizeof big, "send big: %s", strerror(errno));
	CHECK(sendto(c, "small", 5, 0, (struct sockaddr *)&a, l) == 5, "send small: %s", strerror(errno));
	CHECK(poll(&p, 1, 3000) == 1, "nothing received");
	n = recv(U4, buf, sizeof buf, MSG_DONTWAIT);
	CHECK(n == 5 && !memcmp(buf, "small", 5), "received %zd bytes, want the 5-byte datagram (filter did not drop the big one)", n);
	close(c);
}

int main(int argc, char **argv)
{
	struct sockaddr_in a4 = { .sin_family = AF_INET };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6 };
	struct sock_fprog fp = { sizeof prog / sizeof prog[0], prog };
	struct ip_mreqn mr = { .imr_ifindex = 1 };
	struct ipv6_mreq mr6 = { .ipv6mr_interface = 1 };
	struct sock_txtime tt = { CLOCK_MONOTONIC, SOF_TXTIME_REPORT_ERRORS }, tt2;
	unsigned long rate = 12345678, rate2;
	char cc[32];
	socklen_t l;
	int one = 1;
	size_t i;

	case_init(argc, argv);
	a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a6.sin6_addr = in6addr_loopback;
	inet_pton(AF_INET, "239.1.2.3", &mr.imr_multiaddr);
	inet_pton(AF_INET6, "ff12::1234", &mr6.ipv6mr_multiaddr);

	at(socket(AF_INET, SOCK_DGRAM, 0), U4);
	at(socket(AF_INET6, SOCK_DGRAM, 0), U6);
	at(socket(AF_INET, SOCK_STREAM, 0), L4);
	at(socket(AF_INET, SOCK_STREAM, 0), T4);
	for (i = 0; i < NOPTS; i++) {
		struct opt *o = &opts[i];
		int fresh = socket(o->fd == U6 ? AF_INET6 : AF_INET, o->fd == U4 || o->fd == U6 ? SOCK_DGRAM : SOCK_STREAM, 0);
		int def = getint(fresh, o->level, o->opt, o->name);

		close(fresh);
		CHECK(setsockopt(o->fd, o->level, o->opt, &o->val, sizeof o->val) == 0, "setsockopt %s: %s", o->name, strerror(errno));
		o->saved = getint(o->fd, o->level, o->opt, o->name);
		CHECK(o->saved != def, "%s: reads %d, the default: the test would prove nothing", o->name, def);
	}
	CHECK(setsockopt(U4, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) == 0, "SO_ATTACH_FILTER: %s", strerror(errno));
	CHECK(setsockopt(U4, SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof one) == 0, "SO_LOCK_FILTER: %s", strerror(errno));
	CHECK(setsockopt(U4, SOL_IP, IP_ADD_MEMBERSHIP, &mr, sizeof mr) == 0, "IP_ADD_MEMBERSHIP: %s", strerror(errno));
	CHECK(setsockopt(U6, SOL_IPV6, IPV6_ADD_MEMBERSHIP, &mr6, sizeof mr6) == 0, "IPV6_ADD_MEMBERSHIP: %s", strerror(errno));
	CHECK(setsockopt(U4, SOL_SOCKET, SO_TXTIME, &tt, sizeof tt) == 0, "SO_TXTIME: %s", strerror(errno));
	CHECK(setsockopt(U4, SOL_SOCKET, SO_MAX_PACING_RATE, &rate, sizeof rate) == 0, "SO_MAX_PACING_RATE: %s", strerror(errno));
	CHECK(setsockopt(L4, IPPROTO_TCP, TCP_CONGESTION, "reno", 4) == 0, "TCP_CONGESTION: %s", strerror(errno));
	CHECK(bind(U4, (struct sockaddr *)&a4, sizeof a4) == 0, "bind udp: %s", strerror(errno));
	CHECK(bind(U6, (struct sockaddr *)&a6, sizeof a6) == 0, "bind udp6: %s", strerror(errno));
	CHECK(bind(L4, (struct sockaddr *)&a4, sizeof a4) == 0, "bind tcp: %s", strerror(errno));
	CHECK(listen(L4, 4) == 0, "listen: %s", strerror(errno));
	for (i = 0; i < NOPTS; i++) /* bind/listen may change some: read again */
		opts[i].saved = getint(opts[i].fd, opts[i].level, opts[i].opt, opts[i].name);
	check_filter();

	case_ready();
	case_wait_go();

	for (i = 0; i < NOPTS; i++) {
		struct opt *o = &opts[i];
		int v = getint(o->fd, o->level, o->opt, o->name);

		CHECK(v == o->saved, "fd %d %s: reads %d, was %d", o->fd, o->name, v, o->saved);
	}
	check_filter();
	errno = 0;
	CHECK(setsockopt(U4, SOL_IP, IP_ADD_MEMBERSHIP, &mr, sizeof mr) == -1 && errno == EADDRINUSE,
	      "multicast membership lost (joining again: %s)", strerror(errno));
	errno = 0;
	CHECK(setsockopt(U6, SOL_IPV6, IPV6_ADD_MEMBERSHIP, &mr6, sizeof mr6) == -1 && errno == EADDRINUSE,
	      "IPv6 multicast membership lost (joining again: %s)", strerror(errno));
	l = sizeof tt2;
	CHECK(getsockopt(U4, SOL_SOCKET, SO_TXTIME, &tt2, &l) == 0 && tt2.clockid == CLOCK_MONOTONIC && tt2.flags == SOF_TXTIME_REPORT_ERRORS,
	      "SO_TXTIME: clock %d flags %#x", tt2.clockid, tt2.flags);
	l = sizeof rate2;
	CHECK(getsockopt(U4, SOL_SOCKET, SO_MAX_PACING_RATE, &rate2, &l) == 0 && rate2 == rate, "SO_MAX_PACING_RATE %lu", rate2);
	l = sizeof cc;
	memset(cc, 0, sizeof cc);
	CHECK(getsockopt(L4, IPPROTO_TCP, TCP_CONGESTION, cc, &l) == 0 && !strcmp(cc, "reno"), "TCP_CONGESTION %s", cc);
	/* UDP_CORK off to let the datagrams through */
	one = 0;
	CHECK(setsockopt(U4, IPPROTO_UDP, UDP_CORK, &one, sizeof one) == 0, "UDP_CORK off: %s", strerror(errno));
	check_filter_works();
	case_pass();
	return 0;
}

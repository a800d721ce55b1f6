/*
 * e_lowsk: netlink and packet sockets survive C/R (run in a network
 * namespace of its own).
 *
 *   fd 50  NETLINK_ROUTE bound to port id 4242 and groups RTMGRP_LINK |
 *          RTMGRP_IPV4_IFADDR, group 36 (RTNLGRP_STATS) joined with
 *          NETLINK_ADD_MEMBERSHIP, SO_RCVBUF, NETLINK_NO_ENOBUFS,
 *          NETLINK_EXT_ACK
 *   fd 51  NETLINK_KOBJECT_UEVENT bound to group 1 with a socket filter
 *   fd 52  NETLINK_SOCK_DIAG, unbound
 *   fd 53  packet socket (SOCK_DGRAM, ETH_P_IP) bound to lo, PACKET_AUXDATA,
 *          promiscuous membership on lo, a filter passing UDP only
 *
 * After "go": names, memberships and options as before; an address added
 * to lo is announced on fd 50; a UDP datagram on lo is seen by fd 53, and
 * its filter keeps ICMP out; lo is still promiscuous (fd 53's membership).
 */
#define _GNU_SOURCE
#include "case.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

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

/* UDP only: the filter sees the IP header first (SOCK_DGRAM) */
static struct sock_filter udp_only[] = {
	BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_UDP, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, 0xffff),
	BPF_STMT(BPF_RET | BPF_K, 0),
};
static struct sock_filter all[] = { BPF_STMT(BPF_RET | BPF_K, 0xffff) };

static struct sockaddr_storage names[4];
static int rcvbuf, aux;
static unsigned int groups[4];

static void record(int i, struct sockaddr_storage *n)
{
	socklen_t l = sizeof *n;

	memset(n, 0, sizeof *n);
	CHECK(getsockname(50 + i, (struct sockaddr *)n, &l) == 0, "getsockname fd %d: %s", 50 + i, strerror(errno));
}

/* lo's promiscuity count is 1 (fd 53's membership; SIOCGIFFLAGS shows
 * only the flag set by hand) */
static int promisc(void)
{
	return system("ip -d link show lo | grep -q 'promiscuity 1 '") == 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_nl nl = { .nl_family = AF_NETLINK, .nl_pid = 4242, .nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR };
	struct sockaddr_nl ue = { .nl_family = AF_NETLINK, .nl_groups = 1 };
	struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP), .sll_ifindex = 1 };
	struct packet_mreq mr = { .mr_ifindex = 1, .mr_type = PACKET_MR_PROMISC };
	struct sock_fprog f1 = { 4, udp_only }, f2 = { 1, all };
	struct sockaddr_in lo = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	unsigned int g2[4];
	char buf[8192];
	struct pollfd p;
	socklen_t l;
	int i, n, u, found;

	case_init(argc, argv);
	at(socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE), 50);
	setint(50, SOL_SOCKET, SO_RCVBUF, 300000, "SO_RCVBUF");
	setint(50, SOL_NETLINK, NETLINK_NO_ENOBUFS, 1, "NETLINK_NO_ENOBUFS");
	setint(50, SOL_NETLINK, NETLINK_EXT_ACK, 1, "NETLINK_EXT_ACK");
	CHECK(bind(50, (struct sockaddr *)&nl, sizeof nl) == 0, "bind fd 50: %s", strerror(errno));
	setint(50, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, 36, "NETLINK_ADD_MEMBERSHIP");
	at(socket(AF_NETLINK, SOCK_RAW, NETLINK_KOBJECT_UEVENT), 51);
	CHECK(setsockopt(51, SOL_SOCKET, SO_ATTACH_FILTER, &f2, sizeof f2) == 0, "filter fd 51: %s", strerror(errno));
	CHECK(bind(51, (struct sockaddr *)&ue, sizeof ue) == 0, "bind fd 51: %s", strerror(errno));
	at(socket(AF_NETLINK, SOCK_DGRAM, NETLINK_SOCK_DIAG), 52);
	at(socket(AF_PACKET, SOCK_DGRAM, 0), 53);
	setint(53, SOL_PACKET, PACKET_AUXDATA, 1, "PACKET_AUXDATA");
	CHECK(setsockopt(53, SOL_SOCKET, SO_ATTACH_FILTER, &f1, sizeof f1) == 0, "filter fd 53: %s", strerror(errno));
	CHECK(setsockopt(53, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) == 0, "PACKET_ADD_MEMBERSHIP: %s", strerror(errno));
	CHECK(bind(53, (struct sockaddr *)&ll, sizeof ll) == 0, "bind fd 53: %s", strerror(errno));
	CHECK(promisc(), "lo not promiscuous");
	for (i = 0; i < 4; i++)
		record(i, &names[i]);
	rcvbuf = getint(50, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF");
	aux = getint(53, SOL_PACKET, PACKET_AUXDATA, "PACKET_AUXDATA");
	l = sizeof groups;
	CHECK(getsockopt(50, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, groups, &l) == 0, "NETLINK_LIST_MEMBERSHIPS: %s", strerror(errno));
	/* notifications (some come late: linkwatch) and lo traffic until
	 * now: nothing may be queued at the dump */
	p = (struct pollfd){ .fd = 50, .events = POLLIN };
	do {
		for (i = 50; i <= 53; i++)
			while (recv(i, buf, sizeof buf, MSG_DONTWAIT) > 0)
				;
	} while (poll(&p, 1, 1500) > 0);

	case_ready();
	case_wait_go();

	for (i = 0; i < 4; i++) {
		struct sockaddr_storage nn;

		record(i, &nn);
		CHECK(!memcmp(&nn, &names[i], sizeof nn), "fd %d: another name", 50 + i);
	}
	CHECK(getint(50, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF") == rcvbuf, "fd 50: SO_RCVBUF changed");
	CHECK(getint(50, SOL_NETLINK, NETLINK_NO_ENOBUFS, "NETLINK_NO_ENOBUFS") == 1, "fd 50: NETLINK_NO_ENOBUFS lost");
	CHECK(getint(50, SOL_NETLINK, NETLINK_EXT_ACK, "NETLINK_EXT_ACK") == 1, "fd 50: NETLINK_EXT_ACK lost");
	memset(g2, 0, sizeof g2);
	l = sizeof g2;
	CHECK(getsockopt(50, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, g2, &l) == 0 && !memcmp(g2, groups, sizeof g2) && (g2[1] & (1 << 3)),
	      "fd 50: memberships %#x %#x, were %#x %#x", g2[0], g2[1], groups[0], groups[1]);
	CHECK(getint(53, SOL_PACKET, PACKET_AUXDATA, "PACKET_AUXDATA") == aux, "fd 53: PACKET_AUXDATA lost");
	CHECK(promisc(), "lo no longer promiscuous (membership of fd 53 lost)");

	CHECK(system("ip addr add 10.5.5.5/32 dev lo") == 0, "ip addr add failed");
	p = (struct pollfd){ .fd = 50, .events = POLLIN };
	CHECK(poll(&p, 1, 3000) == 1, "fd 50: no notification");
	found = 0;
	while ((n = recv(50, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
		struct nlmsghdr *h;

		for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n))
			found |= h->nlmsg_type == RTM_NEWADDR;
	}
	CHECK(found, "fd 50: no RTM_NEWADDR for the new address");

	/* ICMP is filtered out, UDP passes */
	CHECK(system("ping -c 1 -W 1 127.0.0.1 > /dev/null 2>&1 || true") == 0, "ping");
	u = socket(AF_INET, SOCK_DGRAM, 0);
	lo.sin_port = htons(9);
	CHECK(sendto(u, "x", 1, 0, (struct sockaddr *)&lo, sizeof lo) == 1, "udp send: %s", strerror(errno));
	p = (struct pollfd){ .fd = 53, .events = POLLIN };
	CHECK(poll(&p, 1, 3000) == 1, "fd 53 saw nothing");
	while ((n = recv(53, buf, sizeof buf, MSG_DONTWAIT)) > 0)
		CHECK(n >= 20 && buf[9] == IPPROTO_UDP, "fd 53: a packet of protocol %d passed its filter", buf[9]);
	case_pass();
	return 0;
}

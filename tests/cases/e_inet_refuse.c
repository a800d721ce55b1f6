/*
 * e_inet_refuse: socket state the image cannot carry, for the negative
 * tests of tests/inet_opts_test.go. Built with one of:
 *   -DUNIX_TXTIME    fd 60: a unix socketpair end with SO_TXTIME
 *   -DEBPF_FILTER    fd 60: a UDP socket with an eBPF filter (SO_ATTACH_BPF)
 *   -DPACKET_RING    fd 60: a packet socket with a PACKET_RX_RING
 *   -DNETLINK_GEN    fd 60: a generic netlink socket (NETLINK_GENERIC)
 *   -DNETLINK_QUEUED fd 60: a NETLINK_ROUTE socket with a reply queued
 *   -DMCAST_SSM      fd 60: a UDP socket with a source-specific membership
 * After "go" it checks that the state is still there (the failed dump left
 * it alone).
 */
#define _GNU_SOURCE
#include "case.h"

#include <linux/bpf.h>
#include <linux/if_packet.h>
#include <linux/net_tstamp.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#define FD 60

int main(int argc, char **argv)
{
	case_init(argc, argv);
#ifdef UNIX_TXTIME
	struct sock_txtime tt = { CLOCK_MONOTONIC, 0 }, got;
	socklen_t l = sizeof got;
	int sv[2];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair: %s", strerror(errno));
	CHECK(dup2(sv[0], FD) == FD, "dup2: %s", strerror(errno));
	close(sv[0]);
	CHECK(setsockopt(FD, SOL_SOCKET, SO_TXTIME, &tt, sizeof tt) == 0, "SO_TXTIME: %s", strerror(errno));
	case_ready();
	case_wait_go();
	CHECK(getsockopt(FD, SOL_SOCKET, SO_TXTIME, &got, &l) == 0 && got.clockid == CLOCK_MONOTONIC, "SO_TXTIME changed");
#endif
#ifdef EBPF_FILTER
	struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	union bpf_attr attr = { 0 };
	char buf[8];
	int s = socket(AF_INET, SOCK_DGRAM, 0), prog;

	attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	attr.insns = (unsigned long)insns;
	attr.insn_cnt = 2;
	attr.license = (unsigned long)"GPL";
	prog = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
	CHECK(prog >= 0, "BPF_PROG_LOAD: %s", strerror(errno));
	CHECK(dup2(s, FD) == FD, "dup2: %s", strerror(errno));
	close(s);
	CHECK(setsockopt(FD, SOL_SOCKET, SO_ATTACH_BPF, &prog, sizeof prog) == 0, "SO_ATTACH_BPF: %s", strerror(errno));
	close(prog);
	case_ready();
	case_wait_go();
	socklen_t n = 0;
	CHECK(getsockopt(FD, SOL_SOCKET, SO_GET_FILTER, buf, &n) == -1 && errno == EACCES, "eBPF filter gone");
#endif
#ifdef PACKET_RING
	struct tpacket_req req = { .tp_block_size = 4096, .tp_block_nr = 1, .tp_frame_size = 2048, .tp_frame_nr = 2 };
	int s = socket(AF_PACKET, SOCK_RAW, 0);

	CHECK(dup2(s, FD) == FD, "dup2: %s", strerror(errno));
	close(s);
	CHECK(setsockopt(FD, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) == 0, "PACKET_RX_RING: %s", strerror(errno));
	case_ready();
	case_wait_go();
	CHECK(setsockopt(FD, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) == -1 && errno == EBUSY, "ring gone");
#endif
#ifdef NETLINK_GEN
	int s = socket(AF_NETLINK, SOCK_RAW, NETLINK_GENERIC);

	CHECK(dup2(s, FD) == FD, "dup2: %s", strerror(errno));
	close(s);
	case_ready();
	case_wait_go();
#endif
#ifdef NETLINK_QUEUED
	struct {
		struct nlmsghdr h;
		struct rtgenmsg g;
	} req = { { sizeof req, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0 }, { AF_UNSPEC } };
	struct pollfd p = { .fd = FD, .events = POLLIN };
	int s = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);

	CHECK(dup2(s, FD) == FD, "dup2: %s", strerror(errno));
	close(s);
	CHECK(send(FD, &req, sizeof req, 0) == sizeof req, "send: %s", strerror(errno));
	CHECK(poll(&p, 1, 3000) == 1, "no reply");
	case_ready();
	case_wait_go();
	CHECK(poll(&p, 1, 0) == 1, "reply gone");
#endif
#ifdef MCAST_SSM
	struct ip_mreq_source ms = { 0 };
	int s = socket(AF_INET, SOCK_DGRAM, 0);

	inet_pton(AF_INET, "232.1.2.3", &ms.imr_multiaddr);
	inet_pton(AF_INET, "127.0.0.1", &ms.imr_interface);
	inet_pton(AF_INET, "10.1.1.1", &ms.imr_sourceaddr);
	CHECK(dup2(s, FD) == FD, "dup2: %s", strerror(errno));
	close(s);
	CHECK(setsockopt(FD, SOL_IP, IP_ADD_SOURCE_MEMBERSHIP, &ms, sizeof ms) == 0, "IP_ADD_SOURCE_MEMBERSHIP: %s", strerror(errno));
	case_ready();
	case_wait_go();
	CHECK(setsockopt(FD, SOL_IP, IP_ADD_SOURCE_MEMBERSHIP, &ms, sizeof ms) == -1 && errno == EADDRNOTAVAIL, "membership gone (%s)", strerror(errno));
#endif
	case_pass();
	return 0;
}

package inetsk

import (
	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/sockopt"
)

// moreOpt is an integer option kept in InetSocket.opts.
type moreOpt struct {
	level, opt int
	family     int  // 0: both
	proto      int  // 0: both
	notConn    bool // not for TCP connections (the value read there is not the one set)
	raw        bool // raw sockets only
}

// Option numbers of <linux/in6.h> that x/sys/unix does not carry.
const (
	ipv6FlowInfo     = 11 // IPV6_FLOWINFO: receive the flow label
	ipv6FlowInfoSend = 33 // IPV6_FLOWINFO_SEND
)

// moreOpts are the options kept in InetSocket.opts, in this order (the
// order they are set in); the socket-level ones all families share come
// from internal/sockopt. Every integer option getsockopt reads back as
// it was set is here; an option this kernel does not know is skipped at
// dump (it cannot differ from a fresh socket's).
//
// IPv4 (SOL_IP) options apply to IPv6 sockets too (they govern their
// IPv4-mapped traffic); IP_TTL and IP_TOS of an IPv4 socket are in
// intOpts. The multicast ones are UDP only: TCP refuses
// IP_MULTICAST_TTL, and an accepted connection inherits the SYN's TTL in
// it. TCP_MAXSEG is the user's MSS only on a socket that is not a
// connection (a connection reads its current MSS, kept by TcpStream).
// SO_RCVLOWAT (which may grow a TCP receive buffer) comes after the
// buffers, and SO_BUF_LOCK last: it puts back exactly the "size set by
// the user" bits that setting the buffers also sets.
var moreOpts = append(append([]moreOpt{
	{level: unix.SOL_SOCKET, opt: unix.SO_OOBINLINE, proto: unix.IPPROTO_TCP},
	{level: unix.SOL_SOCKET, opt: unix.SO_NO_CHECK, proto: unix.IPPROTO_UDP},
}, genericOpts()...), []moreOpt{
	{level: unix.SOL_IP, opt: unix.IP_TTL, family: unix.AF_INET6},
	{level: unix.SOL_IP, opt: unix.IP_TOS, family: unix.AF_INET6},
	{level: unix.SOL_IP, opt: unix.IP_FREEBIND, family: unix.AF_INET6},
	{level: unix.SOL_IP, opt: unix.IP_PKTINFO},
	{level: unix.SOL_IP, opt: unix.IP_RECVTOS},
	{level: unix.SOL_IP, opt: unix.IP_RECVTTL},
	{level: unix.SOL_IP, opt: unix.IP_RECVOPTS},
	{level: unix.SOL_IP, opt: unix.IP_RETOPTS},
	{level: unix.SOL_IP, opt: unix.IP_PASSSEC},
	{level: unix.SOL_IP, opt: unix.IP_RECVERR},
	{level: unix.SOL_IP, opt: unix.IP_RECVERR_RFC4884},
	{level: unix.SOL_IP, opt: unix.IP_RECVORIGDSTADDR},
	{level: unix.SOL_IP, opt: unix.IP_RECVFRAGSIZE},
	{level: unix.SOL_IP, opt: unix.IP_CHECKSUM},
	{level: unix.SOL_IP, opt: unix.IP_MTU_DISCOVER},
	{level: unix.SOL_IP, opt: unix.IP_MINTTL},
	{level: unix.SOL_IP, opt: unix.IP_UNICAST_IF},
	{level: unix.SOL_IP, opt: unix.IP_LOCAL_PORT_RANGE},
	{level: unix.SOL_IP, opt: unix.IP_MULTICAST_TTL, proto: unix.IPPROTO_UDP},
	{level: unix.SOL_IP, opt: unix.IP_MULTICAST_LOOP, proto: unix.IPPROTO_UDP},
	{level: unix.SOL_IP, opt: unix.IP_MULTICAST_ALL, proto: unix.IPPROTO_UDP},
	{level: unix.SOL_IP, opt: unix.IP_MULTICAST_IF, proto: unix.IPPROTO_UDP},
	{level: unix.SOL_IP, opt: unix.IP_TRANSPARENT},
	{level: unix.SOL_IPV6, opt: unix.IPV6_RECVPKTINFO, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_RECVTCLASS, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_RECVHOPLIMIT, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_RECVRTHDR, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_RECVHOPOPTS, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_RECVDSTOPTS, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_RECVPATHMTU, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_RECVORIGDSTADDR, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_RECVFRAGSIZE, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: ipv6FlowInfo, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: ipv6FlowInfoSend, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_RECVERR, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_RECVERR_RFC4884, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_MTU_DISCOVER, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_DONTFRAG, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_AUTOFLOWLABEL, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_ADDR_PREFERENCES, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_MINHOPCOUNT, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_UNICAST_IF, family: unix.AF_INET6},
	{level: unix.SOL_IPV6, opt: unix.IPV6_MULTICAST_HOPS, family: unix.AF_INET6, proto: unix.IPPROTO_UDP},
	{level: unix.SOL_IPV6, opt: unix.IPV6_MULTICAST_LOOP, family: unix.AF_INET6, proto: unix.IPPROTO_UDP},
	{level: unix.SOL_IPV6, opt: unix.IPV6_MULTICAST_ALL, family: unix.AF_INET6, proto: unix.IPPROTO_UDP},
	{level: unix.SOL_IPV6, opt: unix.IPV6_MULTICAST_IF, family: unix.AF_INET6, proto: unix.IPPROTO_UDP},
	{level: unix.SOL_IPV6, opt: unix.IPV6_TRANSPARENT, family: unix.AF_INET6},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_MAXSEG, proto: unix.IPPROTO_TCP, notConn: true},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_USER_TIMEOUT, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_FASTOPEN, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_FASTOPEN_CONNECT, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_FASTOPEN_NO_COOKIE, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_SYNCNT, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_LINGER2, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_WINDOW_CLAMP, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_NOTSENT_LOWAT, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_THIN_LINEAR_TIMEOUTS, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_SAVE_SYN, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_INQ, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_TX_DELAY, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_RTO_MIN_US, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_DELACK_MAX_US, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_QUICKACK, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_TCP, opt: unix.TCP_CORK, proto: unix.IPPROTO_TCP},
	{level: unix.IPPROTO_UDP, opt: unix.UDP_CORK, proto: unix.IPPROTO_UDP},
	{level: unix.IPPROTO_UDP, opt: unix.UDP_SEGMENT, proto: unix.IPPROTO_UDP},
	{level: unix.IPPROTO_UDP, opt: unix.UDP_GRO, proto: unix.IPPROTO_UDP},
	{level: unix.IPPROTO_UDP, opt: unix.UDP_NO_CHECK6_TX, family: unix.AF_INET6, proto: unix.IPPROTO_UDP},
	{level: unix.IPPROTO_UDP, opt: unix.UDP_NO_CHECK6_RX, family: unix.AF_INET6, proto: unix.IPPROTO_UDP},
	{level: unix.IPPROTO_UDP, opt: unix.UDP_ENCAP, proto: unix.IPPROTO_UDP},
	{level: unix.IPPROTO_UDPLITE, opt: udpliteSendCscov, proto: unix.IPPROTO_UDPLITE},
	{level: unix.IPPROTO_UDPLITE, opt: udpliteRecvCscov, proto: unix.IPPROTO_UDPLITE},
	{level: unix.SOL_IP, opt: unix.IP_HDRINCL, family: unix.AF_INET, raw: true},
	{level: unix.SOL_IP, opt: unix.IP_NODEFRAG, family: unix.AF_INET, raw: true},
	{level: solRaw, opt: icmpFilter, family: unix.AF_INET, proto: unix.IPPROTO_ICMP, raw: true},
	{level: unix.SOL_IPV6, opt: ipv6HdrIncl, family: unix.AF_INET6, raw: true},
	{level: unix.SOL_IPV6, opt: unix.IPV6_CHECKSUM, family: unix.AF_INET6, raw: true},
	{level: unix.SOL_SOCKET, opt: unix.SO_BUF_LOCK},
}...)

// genericOpts are the socket-level options every family shares
// (internal/sockopt.Generic).
func genericOpts() []moreOpt {
	var l []moreOpt
	for _, o := range sockopt.Generic {
		l = append(l, moreOpt{level: unix.SOL_SOCKET, opt: o.Opt})
	}
	return l
}

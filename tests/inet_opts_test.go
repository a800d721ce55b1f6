package tests

// Socket options and socket states of core/inetsk that used to come back
// different, be refused or fail at restore (issue 11), each checked from
// inside the restored case.

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestCR_InetOpts: see tests/cases/e_inet_opts.c.
func TestCR_InetOpts(t *testing.T) {
	runCase(t, Case{Name: "e_inet_opts", Src: "e_inet_opts.c", NetNS: true})
}

// refusedCase starts tests/cases/e_inet_refuse.c built with define,
// requires its dump to fail naming fd 60 and want, and the case to go on
// unchanged (it checks its state after "go").
func inetRefusedCase(t *testing.T, name, define, want string) {
	t.Helper()
	c := Case{Name: name, Src: "e_inet_refuse.c", CFlags: []string{"-D" + define}, NetNS: true}
	requireRefusedDump(t, c, func(t *testing.T, stderr string, _ int) {
		if !regexp.MustCompile(`\bfd\W{0,3}60\b`).MatchString(stderr) || !strings.Contains(stderr, want) {
			t.Errorf("dump error does not name fd 60 and %q:\n%s", want, stderr)
		}
	})
}

// TestNegative_UnixTxtime: a unix socket with SO_TXTIME (not kept by the
// image, unlike the other socket-level options, see TestCR_UnixOptions)
// is refused by name.
func TestNegative_UnixTxtime(t *testing.T) {
	inetRefusedCase(t, "e_unix_txtime", "UNIX_TXTIME", "SO_TXTIME")
}

// TestNegative_InetEBPFFilter: an eBPF socket filter is refused by name.
func TestNegative_InetEBPFFilter(t *testing.T) {
	inetRefusedCase(t, "e_inet_ebpf", "EBPF_FILTER", "SO_ATTACH_BPF")
}

// TestCR_InetBind: see tests/cases/e_inet_bind.c (SO_REUSEPORT groups,
// IP_FREEBIND/IPV6_FREEBIND/IP_TRANSPARENT on absent addresses).
func TestCR_InetBind(t *testing.T) {
	runCase(t, Case{Name: "e_inet_bind", Src: "e_inet_bind.c", NetNS: true})
}

// TestCR_InetBindNonRoot: e_inet_bind.c as uid 1000.
func TestCR_InetBindNonRoot(t *testing.T) {
	runCase(t, Case{Name: "e_inet_bind_nonroot", Src: "e_inet_bind.c", CFlags: []string{"-DNONROOT"}, Uid: 1000, NetNS: true})
}

// TestCR_InetBindEst: e_inet_bind.c with an established connection on the
// reuseport group's port and a dual-stack reuseport pair (--tcp-established).
func TestCR_InetBindEst(t *testing.T) {
	runCase(t, Case{Name: "e_inet_bind_est", Src: "e_inet_bind.c", CFlags: []string{"-DEST"}, NetNS: true, DumpArgs: []string{"--tcp-established"}})
}

// TestCR_InetBindGone: e_inet_bind.c with a socket bound to an address
// removed before the dump: the restore binds it anyway (IP_FREEBIND for the
// bind only).
func TestCR_InetBindGone(t *testing.T) {
	runCase(t, Case{Name: "e_inet_bind_gone", Src: "e_inet_bind.c", CFlags: []string{"-DGONE"}, NetNS: true,
		BeforeDump: func(t *testing.T, r *Run) {
			// gone after the first dump already
			_ = exec.Command("nsenter", "--net="+r.NetNS, "ip", "addr", "del", "10.77.0.1/32", "dev", "lo").Run()
		}})
}

// TestCR_TCPState: see tests/cases/e_tcp_state.c (closed TCP sockets after
// a refused connect, connects in progress).
func TestCR_TCPState(t *testing.T) {
	runCase(t, Case{Name: "e_tcp_state", Src: "e_tcp_state.c", NetNS: true})
}

// TestCR_InetKinds: see tests/cases/e_inet_kinds.c (raw, ping, UDP-lite).
func TestCR_InetKinds(t *testing.T) {
	runCase(t, Case{Name: "e_inet_kinds", Src: "e_inet_kinds.c", NetNS: true})
}

// TestCR_LowSockets: see tests/cases/e_lowsk.c (netlink, packet sockets).
func TestCR_LowSockets(t *testing.T) {
	runCase(t, Case{Name: "e_lowsk", Src: "e_lowsk.c", NetNS: true})
}

// TestNegative_PacketRing: a packet socket with a ring is refused by name.
func TestNegative_PacketRing(t *testing.T) {
	inetRefusedCase(t, "e_packet_ring", "PACKET_RING", "PACKET_RX_RING")
}

// TestNegative_NetlinkGeneric: a generic netlink socket (whose families
// may keep state by port id) is refused by name.
func TestNegative_NetlinkGeneric(t *testing.T) {
	inetRefusedCase(t, "e_netlink_generic", "NETLINK_GEN", "netlink protocol 16")
}

// TestNegative_NetlinkQueued: a netlink socket with a message queued is
// refused by name.
func TestNegative_NetlinkQueued(t *testing.T) {
	inetRefusedCase(t, "e_netlink_queued", "NETLINK_QUEUED", "queued")
}

// TestCR_TCPStateLocked: e_tcp_state.c with --tcp-established (the
// connecting sockets are then under the network lock too).
func TestCR_TCPStateLocked(t *testing.T) {
	runCase(t, Case{Name: "e_tcp_state_locked", Src: "e_tcp_state.c", NetNS: true, DumpArgs: []string{"--tcp-established"}})
}

// TestNegative_InetSourceMulticast: a source-specific multicast membership
// is refused by name.
func TestNegative_InetSourceMulticast(t *testing.T) {
	inetRefusedCase(t, "e_inet_ssm", "MCAST_SSM", "source-specific multicast")
}

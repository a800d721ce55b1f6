// Package inetsk dumps and restores IPv4/IPv6 sockets: TCP listeners,
// unconnected, connecting (SYN_SENT) and closed TCP sockets, TCP
// connections (in repair mode, with --tcp-established), UDP and UDP-lite
// sockets, raw sockets and ICMP ping sockets, with their options.
//
// Like core/unixsk, the dumper works on its stolen copy of the socket
// (pidfd_getfd gives the very same struct file) and mostly reads: options
// with getsockopt, addresses with getsockname/getpeername, and the facts no
// getsockopt exposes (state, accept queue, owner, shutdown, bound port)
// from NETLINK_SOCK_DIAG inet_diag (see Diag), or /proc/net for raw and
// ping sockets. Multicast memberships are found by probing (see mcast.go).
// What cannot come back exactly (queued datagrams, pending errors, ended
// connections, eBPF filters, ...) is refused with *UnsupportedError.
// Restore (Create) rebuilds the socket in the caller: socket (with the
// dumped owner), options, bind, listen or connect. A TCP port still held
// by connections of the dumped socket in TIME_WAIT (which, without
// SO_REUSEADDR, block any bind for a minute) is freed by destroying them
// with SOCK_DESTROY.
//
// Not kept, because no dump can see them: SO_ATTACH_REUSEPORT_CBPF/EBPF
// programs, TCP_MD5SIG keys, an IPv4 multicast interface set by index only
// (IP_MULTICAST_IF with ip_mreqn), SO_TXTIME set to CLOCK_REALTIME without
// flags, and half-open connections of a listener (SYN_RECV, not yet in its
// accept queue: the client's final ACK then meets no request and is
// reset).
package inetsk

import (
	"encoding/binary"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/sockdiag"
)

// Constants of <linux/inet_diag.h> and <linux/tcp.h> that x/sys/unix does
// not carry.
const (
	sizeofInetDiagReqV2 = 56 // struct inet_diag_req_v2
	sizeofInetDiagMsg   = 72 // struct inet_diag_msg
	inetDiagShutdown    = 8  // INET_DIAG_SHUTDOWN attribute

	TCPEstablished = 1
	TCPSynSent     = 2
	TCPSynRecv     = 3
	TCPFinWait1    = 4
	TCPFinWait2    = 5
	TCPTimeWait    = 6
	TCPClose       = 7
	TCPCloseWait   = 8
	TCPLastAck     = 9
	TCPListen      = 10
	TCPClosing     = 11

	tcpBoundInactive = 13 // TCP_BOUND_INACTIVE: inet_diag's pseudo-state of bound-only sockets
)

var stateNames = map[int]string{
	TCPEstablished: "ESTABLISHED", TCPSynSent: "SYN_SENT", TCPSynRecv: "SYN_RECV",
	TCPFinWait1: "FIN_WAIT1", TCPFinWait2: "FIN_WAIT2", TCPTimeWait: "TIME_WAIT",
	TCPClose: "CLOSE", TCPCloseWait: "CLOSE_WAIT", TCPLastAck: "LAST_ACK",
	TCPListen: "LISTEN", TCPClosing: "CLOSING",
}

// StateName returns the kernel name of a TCP state (sock_diag idiag_state).
func StateName(s int) string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("state %d", s)
}

// DiagEntry is what inet_diag reports for one socket. For a TCP listener
// RQueue is the number of connections waiting in the accept queue and
// WQueue the maximum (sk_max_ack_backlog, the clamped listen(2) backlog);
// otherwise they are the bytes queued for reading and writing (UDP: memory
// held by queued datagrams).
type DiagEntry struct {
	Family, State  int
	SrcPort        uint16
	DstPort        uint16
	Src, Dst       [16]byte
	RQueue, WQueue uint32
	Uid            uint32
	Ino            uint64
	Shutdown       uint8
	id             [48]byte // struct inet_diag_sockid as reported (SOCK_DESTROY names a socket with it)
}

// Diag is a lazily filled snapshot of the inet sockets of the calling
// thread's network namespace, one inet_diag dump per (family, protocol),
// keyed by inode. Safe for concurrent use.
type Diag struct {
	mu      sync.Mutex
	read    map[[2]int]bool
	entries map[[3]uint64]DiagEntry // family, protocol, inode
	// listsBound: see ListsBound (nil: not probed yet)
	listsBound *bool
}

// NewDiag returns an empty snapshot; dumps are read on first Lookup.
func NewDiag() *Diag {
	return &Diag{read: map[[2]int]bool{}, entries: map[[3]uint64]DiagEntry{}}
}

// ListsBound reports whether sock_diag lists TCP sockets that are bound
// but neither listening nor connected (Linux 6.7 and later): it probes
// once with a socket bound to an ephemeral port of the wildcard address.
func (d *Diag) ListsBound() (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.listsBound != nil {
		return *d.listsBound, nil
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("bound-socket probe: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{}); err != nil {
		return false, fmt.Errorf("bound-socket probe: bind: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, err
	}
	es, err := readDiag(unix.AF_INET, unix.IPPROTO_TCP, 1<<tcpBoundInactive)
	if err != nil {
		return false, err
	}
	ok := false
	for _, e := range es {
		ok = ok || e.Ino == st.Ino
	}
	d.listsBound = &ok
	return ok, nil
}

// Lookup returns the entry of the socket with inode ino of family and
// protocol, dumping that table on first use.
func (d *Diag) Lookup(family, protocol int, ino uint64) (DiagEntry, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := [2]int{family, protocol}
	if !d.read[k] {
		es, err := readDiag(family, protocol, 0xffffffff)
		if err != nil {
			return DiagEntry{}, false, err
		}
		for _, e := range es {
			d.entries[[3]uint64{uint64(family), uint64(protocol), e.Ino}] = e
		}
		d.read[k] = true
	}
	e, ok := d.entries[[3]uint64{uint64(family), uint64(protocol), ino}]
	return e, ok, nil
}

// readDiag dumps every socket of family/protocol in states (a bit mask of
// 1<<state).
func readDiag(family, protocol int, states uint32) ([]DiagEntry, error) {
	req := make([]byte, sizeofInetDiagReqV2)
	req[0], req[1] = byte(family), byte(protocol)
	req[2] = 1 << (inetDiagShutdown - 1)           // idiag_ext (SHUTDOWN is always sent anyway)
	binary.NativeEndian.PutUint32(req[4:], states) // idiag_states
	var out []DiagEntry
	err := sockdiag.Dump("inet diag", req, func(msg []byte) error {
		e, err := parseDiagMsg(msg)
		if err != nil {
			return err
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

// parseDiagMsg decodes one inet_diag_msg and the attributes used here.
func parseDiagMsg(b []byte) (DiagEntry, error) {
	ne := binary.NativeEndian
	if len(b) < sizeofInetDiagMsg {
		return DiagEntry{}, fmt.Errorf("short inet_diag_msg (%d bytes)", len(b))
	}
	e := DiagEntry{Family: int(b[0]), State: int(b[1])}
	copy(e.id[:], b[4:52])
	e.SrcPort = binary.BigEndian.Uint16(b[4:])
	e.DstPort = binary.BigEndian.Uint16(b[6:])
	copy(e.Src[:], b[8:24])
	copy(e.Dst[:], b[24:40])
	e.RQueue = ne.Uint32(b[56:])
	e.WQueue = ne.Uint32(b[60:])
	e.Uid = ne.Uint32(b[64:])
	e.Ino = uint64(ne.Uint32(b[68:]))
	for a := b[sizeofInetDiagMsg:]; len(a) >= 4; {
		l := int(ne.Uint16(a[0:]))
		typ := ne.Uint16(a[2:]) & 0x3fff
		if l < 4 || l > len(a) {
			return DiagEntry{}, fmt.Errorf("socket %d: bad attribute length %d", e.Ino, l)
		}
		if typ == inetDiagShutdown && l >= 5 {
			e.Shutdown = a[4]
		}
		al := (l + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1)
		if al >= len(a) {
			break
		}
		a = a[al:]
	}
	return e, nil
}

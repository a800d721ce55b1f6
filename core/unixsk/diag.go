// Package unixsk dumps and restores UNIX domain sockets.
//
// The dumper holds a copy of each socket of the target (pidfd_getfd gives
// the very same struct file), so everything here works on "our" fd while
// the target sees the same socket: Dump only reads, and every socket
// option it touches to do so (SO_PEEK_OFF, SO_TIMESTAMP) is put back.
// Socket-wide facts that no getsockopt exposes (peer, shutdown state,
// bound name, queue lengths) come from NETLINK_SOCK_DIAG (see Diag).
//
// Supported: every type (stream, dgram, seqpacket), unbound or bound to a
// path (deleted or relative too) or an abstract name, listening (with the
// accept queue, closed waiting clients included), connected (pairs,
// accepted connections, dgram sockets connected to a bound one; the peer
// maybe closed since: gone.go, ghost.go) or not, with queued data,
// per-message credentials, files in flight and dgram sender addresses
// (DumpWith, CaptureEmbryos), all rebuilt together by Build. What cannot be rebuilt is refused with *UnsupportedError.
package unixsk

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/sockdiag"
)

// Constants of <linux/unix_diag.h>, which x/sys/unix does not carry.
const (
	udiagShowName    = 0x01
	udiagShowVFS     = 0x02
	udiagShowPeer    = 0x04
	udiagShowIcons   = 0x08
	udiagShowRQLen   = 0x10
	unixDiagName     = 0
	unixDiagVFS      = 1
	unixDiagPeer     = 2
	unixDiagIcons    = 3
	unixDiagRQLen    = 4
	unixDiagShutdown = 6

	sizeofUnixDiagReq = 24 // struct unix_diag_req
	sizeofUnixDiagMsg = 16 // struct unix_diag_msg

	tcpEstablished = 1  // sk_state of a connected unix socket
	tcpClose       = 7  // sk_state of an unconnected one
	tcpListen      = 10 // sk_state of a listening one

	rcvShutdown  = 1 // sk_shutdown bits, as in UnixSocket.shutdown
	sendShutdown = 2
)

// Diag is a snapshot of the unix sockets of the current network namespace
// from NETLINK_SOCK_DIAG (UDIAG_SHOW_NAME|UDIAG_SHOW_PEER|UDIAG_SHOW_RQLEN|UDIAG_SHOW_ICONS|UDIAG_SHOW_VFS), keyed by inode.
//
// It only covers the network namespace of the calling thread: sockets of a
// task in another netns are not in it. A Diag is immutable once read and
// safe for concurrent Lookups.
type Diag struct {
	entries    map[uint64]DiagEntry
	listenerOf map[uint64]uint64 // client waiting in an accept queue -> listener
}

// DiagEntry is what sock_diag reports for one unix socket.
//
// Ino is the socket inode (the N of "socket:[N]"), PeerIno the inode of the
// socket it is connected to (0 if none; for a stream socket whose peer was
// closed it may name a socket that no longer exists). Type is SOCK_STREAM,
// SOCK_DGRAM or SOCK_SEQPACKET, State the kernel sk_state (TCP_ESTABLISHED=1
// connected, TCP_CLOSE=7 unconnected, TCP_LISTEN=10 listening). Name is the
// bound address: a path, "@"+name for an abstract socket, "" if unbound.
// RQueue/WQueue: for a listening socket the accept backlog length and its
// maximum; otherwise the bytes readable (stream and seqpacket: the whole
// queue; dgram: the first datagram only) and the bytes of memory (truesize)
// this socket's sent-but-unread messages hold. Icons are the inodes of the
// embryonic connections queued on a listening socket.
type DiagEntry struct {
	Ino, PeerIno   uint64
	Type, State    int
	Name           string
	RQueue, WQueue uint32
	Icons          []uint64

	// Reported by the kernel but not (yet) part of the public entry.
	shutdown       uint8  // sk_shutdown: RCV_SHUTDOWN=1 | SEND_SHUTDOWN=2
	hasShutdown    bool   // the kernel sent UNIX_DIAG_SHUTDOWN
	vfsIno, vfsDev uint32 // inode/device of the bound path (UNIX_DIAG_VFS)
}

// ReadDiag dumps every unix socket of the calling thread's network
// namespace. Sockets created or closed while it runs may or may not be in
// the snapshot.
func ReadDiag() (*Diag, error) {
	req := make([]byte, sizeofUnixDiagReq)
	ne := binary.NativeEndian
	req[0] = unix.AF_UNIX
	ne.PutUint32(req[4:], 0xffffffff) // udiag_states: all
	ne.PutUint32(req[12:], udiagShowName|udiagShowVFS|udiagShowPeer|udiagShowIcons|udiagShowRQLen)
	d := &Diag{entries: map[uint64]DiagEntry{}}
	err := sockdiag.Dump("unix diag", req, func(msg []byte) error {
		e, err := parseDiagMsg(msg)
		if err != nil {
			return err
		}
		d.entries[e.Ino] = e
		return nil
	})
	if err != nil {
		return nil, err
	}
	d.index()
	return d, nil
}

// index builds the reverse map of the accept queues.
func (d *Diag) index() {
	d.listenerOf = map[uint64]uint64{}
	for _, e := range d.entries {
		for _, c := range e.Icons {
			d.listenerOf[c] = e.Ino
		}
	}
}

// parseDiagMsg decodes one unix_diag_msg and its attributes.
func parseDiagMsg(b []byte) (DiagEntry, error) {
	ne := binary.NativeEndian
	if len(b) < sizeofUnixDiagMsg {
		return DiagEntry{}, fmt.Errorf("short unix_diag_msg (%d bytes)", len(b))
	}
	e := DiagEntry{
		Type:  int(b[1]),
		State: int(b[2]),
		Ino:   uint64(ne.Uint32(b[4:])),
	}
	for a := b[sizeofUnixDiagMsg:]; len(a) >= 4; {
		l := int(ne.Uint16(a[0:]))
		typ := ne.Uint16(a[2:]) & 0x3fff // strip NLA_F_NESTED/NLA_F_NET_BYTEORDER
		if l < 4 || l > len(a) {
			return DiagEntry{}, fmt.Errorf("socket %d: bad attribute length %d", e.Ino, l)
		}
		v := a[4:l]
		switch typ {
		case unixDiagName:
			e.Name = decodeName(v)
		case unixDiagVFS:
			if len(v) >= 8 {
				e.vfsIno, e.vfsDev = ne.Uint32(v[0:]), ne.Uint32(v[4:])
			}
		case unixDiagPeer:
			if len(v) >= 4 {
				e.PeerIno = uint64(ne.Uint32(v))
			}
		case unixDiagIcons:
			for i := 0; i+4 <= len(v); i += 4 {
				e.Icons = append(e.Icons, uint64(ne.Uint32(v[i:])))
			}
		case unixDiagRQLen:
			if len(v) >= 8 {
				e.RQueue, e.WQueue = ne.Uint32(v[0:]), ne.Uint32(v[4:])
			}
		case unixDiagShutdown:
			if len(v) >= 1 {
				e.shutdown, e.hasShutdown = v[0], true
			}
		}
		al := (l + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1)
		if al > len(a) {
			break
		}
		a = a[al:]
	}
	return e, nil
}

// decodeName turns a sun_path as reported by sock_diag into the image form:
// a filesystem path without its terminating NULs, or "@" followed by the
// bytes of an abstract name (which starts with a NUL in the kernel).
func decodeName(v []byte) string {
	if len(v) == 0 {
		return ""
	}
	if v[0] == 0 {
		return "@" + string(v[1:])
	}
	for len(v) > 0 && v[len(v)-1] == 0 {
		v = v[:len(v)-1]
	}
	return string(v)
}

// Lookup returns the entry of the socket with inode ino.
func (d *Diag) Lookup(ino uint64) (DiagEntry, bool) {
	if d == nil {
		return DiagEntry{}, false
	}
	e, ok := d.entries[ino]
	return e, ok
}

// readSysctl reads an integer from /proc/sys (of the caller's namespaces).
func readSysctl(name string) (int, error) {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return 0, err
	}
	var v int
	if _, err := fmt.Sscan(string(b), &v); err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return v, nil
}

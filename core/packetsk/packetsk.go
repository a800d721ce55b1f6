// Package packetsk dumps and restores packet sockets (AF_PACKET,
// SOCK_RAW or SOCK_DGRAM): protocol, bound interface, SOL_PACKET options,
// memberships (PACKET_ADD_MEMBERSHIP), buffer sizes and a classic BPF
// filter. Refused by name: rings (PACKET_RX_RING/PACKET_TX_RING), fanout
// groups, queued packets, a socket whose interface went away, SOCK_PACKET
// and socket-level options the image does not carry.
//
// Dump reads the dumper's copy of the socket and PACKET_DIAG; Create
// makes a socket that receives nothing yet, sets its options, filter and
// memberships, then binds it to its protocol and interface, so that it
// queues no packet the dumped one would have filtered.
package packetsk

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/inetsk"
	"github.com/ctr-cr/ctr-cr/internal/sockcheck"
	"github.com/ctr-cr/ctr-cr/internal/sockdiag"
)

// UnsupportedError reports a packet socket the image cannot carry.
type UnsupportedError struct {
	Ino    uint64
	Reason string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("packet socket:[%d]: unsupported: %s", e.Ino, e.Reason)
}

func unsupported(ino uint64, format string, a ...any) error {
	return &UnsupportedError{Ino: ino, Reason: fmt.Sprintf(format, a...)}
}

// pktOpts are the SOL_PACKET options kept, in the order they are set.
var pktOpts = []int{
	unix.PACKET_VERSION, unix.PACKET_RESERVE, unix.PACKET_AUXDATA, unix.PACKET_ORIGDEV,
	unix.PACKET_LOSS, unix.PACKET_VNET_HDR, unix.PACKET_VNET_HDR_SZ, unix.PACKET_TIMESTAMP,
	unix.PACKET_QDISC_BYPASS, unix.PACKET_TX_HAS_OFF, unix.PACKET_IGNORE_OUTGOING,
}

var carried = map[string]bool{"SO_ATTACH_FILTER": true, "SO_LOCK_FILTER": true}

// Dump describes the packet socket fd (inode ino). It only reads.
func Dump(fd int, ino uint64) (*imagepb.PacketSk, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Ino != ino {
		return nil, fmt.Errorf("packet socket:[%d]: fd %d is not that socket (%v)", ino, fd, err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("packet socket:[%d]: SO_TYPE: %w", ino, err)
	}
	if typ != unix.SOCK_RAW && typ != unix.SOCK_DGRAM {
		return nil, unsupported(ino, "packet socket of type %d (SOCK_PACKET)", typ)
	}
	s := &imagepb.PacketSk{Type: int32(typ), Uid: st.Uid}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("packet socket:[%d]: getsockname: %w", ino, err)
	}
	if ll, ok := sa.(*unix.SockaddrLinklayer); ok {
		s.Protocol, s.Ifindex = uint32(ll.Protocol), int32(ll.Ifindex)
	}
	d, err := diag(ino)
	if err != nil {
		return nil, fmt.Errorf("packet socket:[%d]: %w", ino, err)
	}
	switch {
	case !d.found:
		return nil, fmt.Errorf("packet socket:[%d]: not in the PACKET_DIAG snapshot (other network namespace?)", ino)
	case d.rings:
		return nil, unsupported(ino, "packet ring (PACKET_RX_RING/PACKET_TX_RING)")
	case d.fanout:
		return nil, unsupported(ino, "packet fanout group (PACKET_FANOUT)")
	case s.Protocol != 0 && !d.running:
		return nil, unsupported(ino, "packet socket whose interface went away")
	}
	s.Memberships = d.mclist
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(p, 0); err != nil {
		return nil, fmt.Errorf("packet socket:[%d]: poll: %w", ino, err)
	}
	if p[0].Revents&unix.POLLIN != 0 {
		return nil, unsupported(ino, "packets queued for reading")
	}
	if p[0].Revents&unix.POLLERR != 0 {
		return nil, unsupported(ino, "a pending error (SO_ERROR or error queue)")
	}
	for _, o := range pktOpts {
		v, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, o)
		if err == unix.ENOPROTOOPT {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("packet socket:[%d]: getsockopt SOL_PACKET %d: %w", ino, o, err)
		}
		s.Opts = append(s.Opts, &imagepb.InetOpt{Level: unix.SOL_PACKET, Name: int32(o), Value: int32(v)})
	}
	return s, dumpSocketLevel(fd, s, ino)
}

// dumpSocketLevel records buffer sizes and the filter, and refuses other
// socket-level options set away from a fresh socket's.
func dumpSocketLevel(fd int, s *imagepb.PacketSk, ino uint64) error {
	ref, err := unix.Socket(unix.AF_PACKET, int(s.Type)|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("packet socket:[%d]: reference socket: %w", ino, err)
	}
	defer unix.Close(ref)
	if what := sockcheck.NonDefault(fd, ref, carried); what != "" {
		return unsupported(ino, "%s is not kept by the image", what)
	}
	for _, b := range []struct {
		opt int
		v   *uint32
	}{{unix.SO_SNDBUF, &s.Sndbuf}, {unix.SO_RCVBUF, &s.Rcvbuf}} {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, b.opt)
		if err != nil {
			return fmt.Errorf("packet socket:[%d]: getsockopt buffer: %w", ino, err)
		}
		*b.v = uint32(v)
	}
	if s.Filter, err = inetsk.GetFilter(fd); err != nil {
		return fmt.Errorf("packet socket:[%d]: getsockopt SO_GET_FILTER: %w", ino, err)
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_LOCK_FILTER); err == nil {
		s.FilterLocked = v != 0
	}
	return nil
}

// Constants of <linux/packet_diag.h>.
const (
	sizeofPacketDiagReq = 20
	sizeofPacketDiagMsg = 16
	showInfo            = 0x1
	showMclist          = 0x2
	showRingCfg         = 0x4
	showFanout          = 0x8
	attrInfo            = 0
	attrMclist          = 1
	attrRxRing          = 2
	attrTxRing          = 3
	attrFanout          = 4
	pdiRunning          = 0x1
	sizeofMclist        = 44
)

type diagInfo struct {
	found, rings, fanout, running bool
	mclist                        []*imagepb.PacketSkMembership
}

// diag reads what PACKET_DIAG reports of the socket with inode ino in the
// calling thread's network namespace.
func diag(ino uint64) (diagInfo, error) {
	var d diagInfo
	ne := binary.NativeEndian
	req := make([]byte, sizeofPacketDiagReq)
	req[0] = unix.AF_PACKET
	ne.PutUint32(req[4:], uint32(ino))
	ne.PutUint32(req[8:], showInfo|showMclist|showRingCfg|showFanout)
	ne.PutUint32(req[12:], ^uint32(0))
	ne.PutUint32(req[16:], ^uint32(0))
	err := sockdiag.Dump("packet diag", req, func(m []byte) error {
		if len(m) < sizeofPacketDiagMsg || uint64(ne.Uint32(m[4:])) != ino {
			return nil
		}
		d.found = true
		for a := m[sizeofPacketDiagMsg:]; len(a) >= 4; {
			l := int(ne.Uint16(a))
			if l < 4 || l > len(a) {
				return fmt.Errorf("bad attribute length %d", l)
			}
			v := a[4:l]
			switch ne.Uint16(a[2:]) & 0x3fff {
			case attrInfo:
				if len(v) >= 24 {
					d.running = ne.Uint32(v[20:])&pdiRunning != 0
				}
			case attrMclist:
				for ; len(v) >= sizeofMclist; v = v[sizeofMclist:] {
					alen := int(ne.Uint16(v[10:]))
					if alen > 32 {
						return fmt.Errorf("membership address of %d bytes", alen)
					}
					d.mclist = append(d.mclist, &imagepb.PacketSkMembership{
						Ifindex: int32(ne.Uint32(v)), Count: ne.Uint32(v[4:]), Type: uint32(ne.Uint16(v[8:])),
						Addr: append([]byte(nil), v[12:12+alen]...),
					})
				}
			case attrRxRing, attrTxRing:
				d.rings = true
			case attrFanout:
				d.fanout = true
			}
			a = a[min((l+3)&^3, len(a)):]
		}
		return nil
	})
	return d, err
}

// Create rebuilds s in the calling process and returns its fd (blocking,
// close-on-exec). On error nothing is left open.
func Create(s *imagepb.PacketSk) (fd int, err error) {
	if s == nil {
		return -1, fmt.Errorf("packet socket entry without its description")
	}
	if s.Type != unix.SOCK_RAW && s.Type != unix.SOCK_DGRAM {
		return -1, fmt.Errorf("packet socket of type %d", s.Type)
	}
	what := "packet socket " + Describe(s)
	// protocol 0: nothing is received until the bind below
	fd, err = unix.Socket(unix.AF_PACKET, int(s.Type)|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("%s: socket: %w", what, err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
			fd = -1
		}
	}()
	if err := setup(fd, s); err != nil {
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	return fd, nil
}

func setup(fd int, s *imagepb.PacketSk) error {
	if err := sockcheck.SetBuf(fd, "SO_SNDBUF", unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, s.Sndbuf); err != nil {
		return err
	}
	if err := sockcheck.SetBuf(fd, "SO_RCVBUF", unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, s.Rcvbuf); err != nil {
		return err
	}
	for _, o := range s.Opts {
		if o.Level != unix.SOL_PACKET || !known(int(o.Name)) {
			return fmt.Errorf("option level %d, %d is not one the image may carry", o.Level, o.Name)
		}
		if cur, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, int(o.Name)); err == nil && cur == int(o.Value) {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, int(o.Name), int(o.Value)); err != nil {
			return fmt.Errorf("setsockopt SOL_PACKET %d = %d: %w", o.Name, o.Value, err)
		}
	}
	if err := inetsk.SetFilter(fd, s.Filter, s.FilterLocked); err != nil {
		return err
	}
	for _, m := range s.Memberships {
		if len(m.Addr) > 8 || m.Count > 1<<16 {
			return fmt.Errorf("membership with a %d-byte address, %d times", len(m.Addr), m.Count)
		}
		mr := unix.PacketMreq{Ifindex: m.Ifindex, Type: uint16(m.Type), Alen: uint16(len(m.Addr))}
		copy(mr.Address[:], m.Addr)
		for i := uint32(0); i < max(m.Count, 1); i++ {
			if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mr); err != nil {
				return fmt.Errorf("PACKET_ADD_MEMBERSHIP type %d on interface %d: %w", m.Type, m.Ifindex, err)
			}
		}
	}
	if s.Protocol != 0 || s.Ifindex != 0 {
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(s.Protocol), Ifindex: int(s.Ifindex)}); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
	}
	return nil
}

func known(o int) bool {
	for _, k := range pktOpts {
		if k == o {
			return true
		}
	}
	return false
}

// Describe is a one-line summary: "raw proto 0x0800 if 1".
func Describe(s *imagepb.PacketSk) string {
	t := "raw"
	if s.Type == unix.SOCK_DGRAM {
		t = "dgram"
	}
	var b [2]byte // the protocol as in memory: network order
	binary.NativeEndian.PutUint16(b[:], uint16(s.Protocol))
	return fmt.Sprintf("%s proto %#04x if %d memberships %d", t, binary.BigEndian.Uint16(b[:]), s.Ifindex, len(s.Memberships))
}

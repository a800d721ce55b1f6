package inetsk

import (
	"errors"
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Repair queues of <linux/tcp.h> (TCP_REPAIR_QUEUE values).
const (
	tcpNoQueue   = 0
	tcpRecvQueue = 1
	tcpSendQueue = 2
)

// maxTCPQueue bounds each queue read from an image (the kernel's own
// buffers are far smaller; a larger value is a damaged image).
const maxTCPQueue = 256 << 20

// tcpRepairWindow is struct tcp_repair_window.
type tcpRepairWindow struct {
	SndWl1, SndWnd, MaxWindow, RcvWnd, RcvWup uint32
}

// Conn is a TCP connection's addresses as sock_diag reports them.
func (e DiagEntry) Conn() (local, remote netip.AddrPort) {
	addr := func(b [16]byte) netip.Addr {
		if e.Family == unix.AF_INET {
			return netip.AddrFrom4([4]byte(b[:4]))
		}
		return netip.AddrFrom16(b)
	}
	return netip.AddrPortFrom(addr(e.Src), e.SrcPort), netip.AddrPortFrom(addr(e.Dst), e.DstPort)
}

// Connections returns the TCP sockets of the calling thread's network
// namespace (both families) that are connections (neither listening nor
// closed nor TIME_WAIT) and whose inode is in inos.
func Connections(inos map[uint64]bool) ([]DiagEntry, error) {
	// the kernel's states up to TCP_CLOSING: not its request sockets
	// (TCP_NEW_SYN_RECV) nor the bound-only ones (TCP_BOUND_INACTIVE)
	states := uint32(1<<(TCPClosing+1)-1) &^ (1<<TCPListen | 1<<TCPClose | 1<<TCPTimeWait)
	var out []DiagEntry
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		es, err := readDiag(fam, unix.IPPROTO_TCP, states)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if inos[e.Ino] {
				out = append(out, e)
			}
		}
	}
	return out, nil
}

// IsConnection reports TCP states DumpTCP handles.
func IsConnection(state int) bool {
	switch state {
	case TCPEstablished, TCPFinWait1, TCPFinWait2, TCPCloseWait, TCPLastAck, TCPClosing:
		return true
	}
	return false
}

// dumpTCP puts the connection fd in repair mode and reads its sequence
// numbers, queues, negotiated options and window into s.Tcp. The socket
// stays in repair mode: the caller either closes every reference to it
// (the connection then ends without FIN or RST) or calls EndRepair.
// info is the TCP_INFO read before.
func dumpTCP(fd int, s *imagepb.InetSocket, info *unix.TCPInfo) (err error) {
	state := int(info.State)
	if !IsConnection(state) {
		return unsupported(s.Ino, "TCP socket in state %s", StateName(state))
	}
	// what each queue holds, before repair mode changes nothing of it
	outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return fmt.Errorf("SIOCOUTQ: %w", err)
	}
	unsentq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQNSD)
	if err != nil {
		return fmt.Errorf("SIOCOUTQNSD: %w", err)
	}
	inq, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return fmt.Errorf("SIOCINQ: %w", err)
	}
	mss, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	if err != nil {
		return fmt.Errorf("getsockopt TCP_MAXSEG: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return fmt.Errorf("TCP_REPAIR on: %w", err)
	}
	defer func() {
		if err != nil {
			if eerr := EndRepair(fd, s); eerr != nil {
				err = fmt.Errorf("%w (and leaving repair mode: %v)", err, eerr)
			}
		}
	}()
	t := &imagepb.TcpStream{Mss: uint32(mss)}
	t.FinSent = state == TCPFinWait1 || state == TCPFinWait2 || state == TCPClosing || state == TCPLastAck
	// reads end at the queue's end: the peer's FIN arrived, or the task
	// shut reading down (a restored connection has only that to show)
	t.FinRcvd = state == TCPCloseWait || state == TCPClosing || state == TCPLastAck || s.Shutdown&1 != 0
	// raw TCP_INFO: tcpi_options (byte 5) and the wscale nibbles (byte 6),
	// which x/sys's TCPInfo does not carry
	raw := (*[8]byte)(unsafe.Pointer(info))
	opts := raw[5]
	t.Timestamps, t.Sack, t.Wscale = opts&1 != 0, opts&2 != 0, opts&4 != 0
	t.SndWscale, t.RcvWscale = uint32(raw[6]&0xf), uint32(raw[6]>>4)

	sndEnd, sendQ, err := readQueue(fd, tcpSendQueue, outq)
	if err != nil {
		return fmt.Errorf("send queue: %w", err)
	}
	rcvEnd, recvQ, err := readQueue(fd, tcpRecvQueue, inq)
	if err != nil {
		return fmt.Errorf("receive queue: %w", err)
	}
	// write_seq counts our FIN; SIOCOUTQ and SIOCOUTQNSD count it until
	// it is acknowledged / sent.
	t.SndSeq = sndEnd - uint32(outq)
	finOut := 0
	if t.FinSent {
		t.FinAcked = outq == len(sendQ)
		if !t.FinAcked {
			finOut = 1
		}
	}
	if len(sendQ)+finOut != outq {
		return fmt.Errorf("send queue: read %d bytes, SIOCOUTQ says %d", len(sendQ), outq)
	}
	unsent := unsentq
	if t.FinSent && !t.FinAcked && unsent > 0 {
		unsent-- // the FIN itself was not sent yet
	}
	if unsent > len(sendQ) {
		return fmt.Errorf("send queue: %d bytes unsent of %d", unsent, len(sendQ))
	}
	t.SendQueue, t.Unsent = sendQ, uint32(unsent)
	// rcv_nxt counts the peer's FIN: the restored queue is shifted by one
	// so that our acknowledgements still cover it (see restoreTCP)
	t.RecvQueue = recvQ
	t.RcvSeq = rcvEnd - uint32(len(recvQ))
	if t.Timestamps {
		ts, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
		if err != nil {
			return fmt.Errorf("getsockopt TCP_TIMESTAMP: %w", err)
		}
		t.Timestamp = uint32(ts)
	}
	var w tcpRepairWindow
	l := uint32(unsafe.Sizeof(w))
	if err := getsockopt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, unsafe.Pointer(&w), &l); err != nil {
		return fmt.Errorf("getsockopt TCP_REPAIR_WINDOW: %w", err)
	}
	t.SndWl1, t.SndWnd, t.MaxWindow, t.RcvWnd, t.RcvWup = w.SndWl1, w.SndWnd, w.MaxWindow, w.RcvWnd, w.RcvWup
	s.Tcp = t
	return nil
}

// readQueue selects a repair queue and returns the sequence number at its
// end and its n bytes (peeked: the queue keeps them).
func readQueue(fd, queue, n int) (uint32, []byte, error) {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue); err != nil {
		return 0, nil, fmt.Errorf("TCP_REPAIR_QUEUE %d: %w", queue, err)
	}
	seq, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
	if err != nil {
		return 0, nil, fmt.Errorf("getsockopt TCP_QUEUE_SEQ: %w", err)
	}
	var buf []byte
	if n > 0 {
		buf = make([]byte, n+1)
		got, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err != nil {
			return 0, nil, fmt.Errorf("peek: %w", err)
		}
		buf = buf[:got]
	}
	return uint32(seq), buf, nil
}

func getsockopt(fd, level, name int, p unsafe.Pointer, l *uint32) error {
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name), uintptr(p), uintptr(unsafe.Pointer(l)), 0)
	if e != 0 {
		return e
	}
	return nil
}

func setsockopt(fd, level, name int, p unsafe.Pointer, l uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name), uintptr(p), l, 0)
	if e != 0 {
		return e
	}
	return nil
}

// EndRepair takes the connection fd out of repair mode without touching
// the peer (a dump that leaves the task running), and puts SO_REUSEADDR
// back (leaving repair mode clears it).
func EndRepair(fd int, s *imagepb.InetSocket) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF_NO_WP); err != nil {
		return fmt.Errorf("%s: TCP_REPAIR off: %w", Describe(s), err)
	}
	return restoreReuse(fd, s)
}

func restoreReuse(fd int, s *imagepb.InetSocket) error {
	if !s.Reuseaddr {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("%s: SO_REUSEADDR: %w", Describe(s), err)
	}
	return nil
}

// checkTCP validates the connection part of an image entry.
func checkTCP(s *imagepb.InetSocket) error {
	t := s.Tcp
	if t == nil {
		return fmt.Errorf("inet socket:[%d]: connection in state %s without its TCP state", s.Ino, StateName(int(s.State)))
	}
	if len(t.SendQueue) > maxTCPQueue || len(t.RecvQueue) > maxTCPQueue {
		return fmt.Errorf("inet socket:[%d]: TCP queues of %d and %d bytes", s.Ino, len(t.SendQueue), len(t.RecvQueue))
	}
	if int(t.Unsent) > len(t.SendQueue) {
		return fmt.Errorf("inet socket:[%d]: %d unsent bytes in a send queue of %d", s.Ino, t.Unsent, len(t.SendQueue))
	}
	if t.SndWscale > 14 || t.RcvWscale > 14 {
		return fmt.Errorf("inet socket:[%d]: window scale %d/%d", s.Ino, t.SndWscale, t.RcvWscale)
	}
	if t.Mss == 0 || t.Mss > 65535 {
		return fmt.Errorf("inet socket:[%d]: MSS %d", s.Ino, t.Mss)
	}
	if s.DstPort == 0 || s.SrcPort == 0 {
		return fmt.Errorf("inet socket:[%d]: connection without both ports", s.Ino)
	}
	return nil
}

// restoreTCP turns fd, a fresh socket with its options set, into the
// connection of s: in repair mode it is bound, given its sequence
// numbers, "connected" without a handshake, given the negotiated options,
// its queues and its window. The socket is left in repair mode (the
// caller ends it with Resume once the network lock can go).
func restoreTCP(fd int, s *imagepb.InetSocket) error {
	t := s.Tcp
	so := func(name string, opt, v int) error {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, opt, v); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	if err := so("TCP_REPAIR on", unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return err
	}
	sa, err := toSockaddr(s.Family, s.SrcAddr, s.SrcPort, s.SrcScope)
	if err != nil {
		return err
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if err := so("TCP_REPAIR_QUEUE send", unix.TCP_REPAIR_QUEUE, tcpSendQueue); err != nil {
		return err
	}
	if err := so("TCP_QUEUE_SEQ send", unix.TCP_QUEUE_SEQ, int(int32(t.SndSeq))); err != nil {
		return err
	}
	if err := so("TCP_REPAIR_QUEUE recv", unix.TCP_REPAIR_QUEUE, tcpRecvQueue); err != nil {
		return err
	}
	if err := so("TCP_QUEUE_SEQ recv", unix.TCP_QUEUE_SEQ, int(int32(t.RcvSeq))); err != nil {
		return err
	}
	da, err := toSockaddr(s.Family, s.DstAddr, s.DstPort, s.DstScope)
	if err != nil {
		return err
	}
	if err := unix.Connect(fd, da); err != nil {
		return fmt.Errorf("connect (repair): %w", err)
	}
	ropts := []unix.TCPRepairOpt{{Code: unix.TCPOPT_MAXSEG, Val: t.Mss}}
	if t.Wscale {
		ropts = append(ropts, unix.TCPRepairOpt{Code: unix.TCPOPT_WINDOW, Val: t.SndWscale | t.RcvWscale<<16})
	}
	if t.Sack {
		ropts = append(ropts, unix.TCPRepairOpt{Code: unix.TCPOPT_SACK_PERMITTED})
	}
	if t.Timestamps {
		ropts = append(ropts, unix.TCPRepairOpt{Code: unix.TCPOPT_TIMESTAMP})
	}
	if err := setsockopt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_OPTIONS, unsafe.Pointer(&ropts[0]), uintptr(len(ropts))*unix.SizeofTCPRepairOpt); err != nil {
		return fmt.Errorf("TCP_REPAIR_OPTIONS: %w", err)
	}
	if t.Timestamps {
		if err := so("TCP_TIMESTAMP", unix.TCP_TIMESTAMP, int(int32(t.Timestamp))); err != nil {
			return err
		}
	}
	// queues: received data, then what was sent (it goes out again only
	// if the peer does not acknowledge it)
	if err := fillQueue(fd, tcpRecvQueue, t.RecvQueue); err != nil {
		return fmt.Errorf("receive queue: %w", err)
	}
	sent := t.SendQueue[:len(t.SendQueue)-int(t.Unsent)]
	if err := fillQueue(fd, tcpSendQueue, sent); err != nil {
		return fmt.Errorf("send queue: %w", err)
	}
	// the window after the receive queue (rcv_wup must not pass rcv_nxt)
	w := tcpRepairWindow{t.SndWl1, t.SndWnd, t.MaxWindow, t.RcvWnd, t.RcvWup}
	if err := setsockopt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, unsafe.Pointer(&w), unsafe.Sizeof(w)); err != nil {
		return fmt.Errorf("TCP_REPAIR_WINDOW: %w", err)
	}
	if t.FinSent {
		// in repair mode, with the send queue selected, the FIN is
		// queued as sent without being transmitted
		if err := so("TCP_REPAIR_QUEUE send", unix.TCP_REPAIR_QUEUE, tcpSendQueue); err != nil {
			return err
		}
		if t.Unsent == 0 {
			if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
				return fmt.Errorf("shutdown (FIN): %w", err)
			}
		}
	}
	if t.FinRcvd {
		// the peer's FIN is covered by rcv_nxt; reads end after the queue
		if err := unix.Shutdown(fd, unix.SHUT_RD); err != nil {
			return fmt.Errorf("shutdown (peer's FIN): %w", err)
		}
	}
	return so("TCP_REPAIR_QUEUE none", unix.TCP_REPAIR_QUEUE, tcpNoQueue)
}

// fillQueue writes b into a repair queue (no transmission).
func fillQueue(fd, queue int, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue); err != nil {
		return fmt.Errorf("TCP_REPAIR_QUEUE %d: %w", queue, err)
	}
	for len(b) > 0 {
		n, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_DONTWAIT)
		if err != nil {
			return fmt.Errorf("write %d bytes: %w", len(b), err)
		}
		b = b[n:]
	}
	return nil
}

// Resume ends repair mode on a restored connection fd: the kernel sends a
// window probe, so the peer answers at once and retransmits what we lack.
// The bytes never transmitted before the dump are then sent normally, and
// a pending FIN after them.
func Resume(fd int, s *imagepb.InetSocket) (err error) {
	t := s.Tcp
	if t == nil {
		return errors.New("not a connection")
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF); err != nil {
		return fmt.Errorf("%s: TCP_REPAIR off: %w", Describe(s), err)
	}
	if err := restoreReuse(fd, s); err != nil {
		return err
	}
	if t.Unsent > 0 {
		b := t.SendQueue[len(t.SendQueue)-int(t.Unsent):]
		// The queue held these bytes before the dump, but a fresh socket
		// accounts its buffers differently (and nobody may drain it
		// before the tasks run): make room, then put the size back.
		sndbuf, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
		if err != nil {
			return fmt.Errorf("%s: getsockopt SO_SNDBUF: %w", Describe(s), err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sndbuf+4*len(t.SendQueue)); err != nil {
			return fmt.Errorf("%s: SO_SNDBUFFORCE: %w", Describe(s), err)
		}
		defer func() {
			if serr := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sndbuf/2); serr != nil && err == nil {
				err = fmt.Errorf("%s: SO_SNDBUFFORCE back to %d: %w", Describe(s), sndbuf/2, serr)
			}
		}()
		for len(b) > 0 {
			n, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			if err != nil {
				return fmt.Errorf("%s: send %d unsent bytes: %w", Describe(s), len(b), err)
			}
			b = b[n:]
		}
		if t.FinSent {
			if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
				return fmt.Errorf("%s: shutdown: %w", Describe(s), err)
			}
		}
	}
	return nil
}

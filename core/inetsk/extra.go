package inetsk

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Flags of SO_TIMESTAMPING (<linux/net_tstamp.h>) whose state no
// getsockopt shows: OPT_ID's counter, BIND_PHC's clock index.
const (
	tsOptID    = 1 << 7
	tsBindPHC  = 1 << 15
	sizeofFilt = 8 // struct sock_filter
)

// dumpExtra reads the options that are not plain integers: the classic
// BPF filter and its lock, TCP_CONGESTION, SO_TXTIME, SO_MAX_PACING_RATE
// and multicast memberships. What the image cannot carry is refused by
// name: an eBPF filter (SO_ATTACH_BPF), an upper layer protocol
// (TCP_ULP, e.g. kTLS), SO_TIMESTAMPING with OPT_ID or BIND_PHC, corked
// UDP data, source-specific multicast memberships.
func dumpExtra(fd int, s *imagepb.InetSocket) error {
	var err error
	if s.Filter, err = GetFilter(fd); err != nil {
		if err == unix.EACCES {
			return unsupported(s.Ino, "eBPF socket filter (SO_ATTACH_BPF)")
		}
		return fmt.Errorf("inet socket:[%d]: getsockopt SO_GET_FILTER: %w", s.Ino, err)
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_LOCK_FILTER); err == nil {
		s.FilterLocked = v != 0
	}
	for _, o := range s.Opts {
		switch {
		case o.Level == unix.SOL_SOCKET && o.Name == unix.SO_TIMESTAMPING && o.Value&tsOptID != 0:
			return unsupported(s.Ino, "SO_TIMESTAMPING with SOF_TIMESTAMPING_OPT_ID (its counter is not kept)")
		case o.Level == unix.SOL_SOCKET && o.Name == unix.SO_TIMESTAMPING && o.Value&tsBindPHC != 0:
			return unsupported(s.Ino, "SO_TIMESTAMPING with SOF_TIMESTAMPING_BIND_PHC")
		case o.Level == unix.IPPROTO_UDP && o.Name == unix.UDP_CORK && o.Value != 0:
			if n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ); err != nil || n > 0 {
				return unsupported(s.Ino, "UDP_CORK with corked data (%d bytes)", n)
			}
		}
	}
	if s.Protocol == unix.IPPROTO_TCP {
		if ulp, err := unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_ULP); err == nil && ulp != "" {
			return unsupported(s.Ino, "TCP_ULP %q (upper layer protocol)", ulp)
		}
		if s.TcpCongestion, err = unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION); err != nil {
			return fmt.Errorf("inet socket:[%d]: getsockopt TCP_CONGESTION: %w", s.Ino, err)
		}
	}
	var tt [2]uint32
	l := uint32(unsafe.Sizeof(tt))
	if err := getsockopt(fd, unix.SOL_SOCKET, unix.SO_TXTIME, unsafe.Pointer(&tt), &l); err == nil && (tt[0] != 0 || tt[1] != 0) {
		s.Txtime, s.TxtimeClockid, s.TxtimeFlags = true, int32(tt[0]), tt[1]
	}
	var rate uint64
	l = uint32(unsafe.Sizeof(rate))
	if err := getsockopt(fd, unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, unsafe.Pointer(&rate), &l); err == nil && l == 8 && rate != ^uint64(0) {
		s.MaxPacingRateSet, s.MaxPacingRate = true, rate
	}
	if err := dumpICMP6Filter(fd, s); err != nil {
		return err
	}
	return dumpMcast(fd, s)
}

// GetFilter returns the classic BPF filter attached to fd (nil: none) as
// struct sock_filter bytes. An eBPF program (SO_ATTACH_BPF) has no
// classic form: EACCES.
func GetFilter(fd int) ([]byte, error) {
	var one [sizeofFilt]byte
	n := uint32(0) // SO_GET_FILTER counts in instructions, not bytes
	if err := getsockopt(fd, unix.SOL_SOCKET, unix.SO_GET_FILTER, unsafe.Pointer(&one[0]), &n); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	buf := make([]byte, int(n)*sizeofFilt)
	if err := getsockopt(fd, unix.SOL_SOCKET, unix.SO_GET_FILTER, unsafe.Pointer(&buf[0]), &n); err != nil {
		return nil, err
	}
	return buf[:int(n)*sizeofFilt], nil
}

// SetFilter attaches the classic BPF filter prog (GetFilter's bytes) to
// fd, and locks it when locked.
func SetFilter(fd int, prog []byte, locked bool) error {
	if len(prog) > 0 {
		if len(prog)%sizeofFilt != 0 || len(prog)/sizeofFilt > unix.BPF_MAXINSNS {
			return fmt.Errorf("socket filter of %d bytes", len(prog))
		}
		ins := make([]unix.SockFilter, len(prog)/sizeofFilt)
		for i := range ins {
			b := prog[i*sizeofFilt:]
			ins[i] = unix.SockFilter{Code: binary.NativeEndian.Uint16(b), Jt: b[2], Jf: b[3], K: binary.NativeEndian.Uint32(b[4:])}
		}
		prog := unix.SockFprog{Len: uint16(len(ins)), Filter: &ins[0]}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
			return fmt.Errorf("SO_ATTACH_FILTER (%d instructions): %w", len(ins), err)
		}
	}
	if locked {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_LOCK_FILTER, 1); err != nil {
			return fmt.Errorf("SO_LOCK_FILTER: %w", err)
		}
	}
	return nil
}

// applyExtra sets on fd what dumpExtra recorded; the filter is last
// (locking it would refuse nothing else, but a locked filter is final).
func applyExtra(fd int, s *imagepb.InetSocket) error {
	if s.TcpCongestion != "" {
		cur, err := unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION)
		if err != nil {
			return fmt.Errorf("getsockopt TCP_CONGESTION: %w", err)
		}
		if cur != s.TcpCongestion {
			if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, s.TcpCongestion); err != nil {
				return fmt.Errorf("setsockopt TCP_CONGESTION %q: %w", s.TcpCongestion, err)
			}
		}
	}
	if s.Txtime {
		tt := [2]uint32{uint32(s.TxtimeClockid), s.TxtimeFlags}
		if err := setsockopt(fd, unix.SOL_SOCKET, unix.SO_TXTIME, unsafe.Pointer(&tt), unsafe.Sizeof(tt)); err != nil {
			return fmt.Errorf("setsockopt SO_TXTIME clock %d flags %#x: %w", s.TxtimeClockid, s.TxtimeFlags, err)
		}
	}
	if s.MaxPacingRateSet {
		rate := s.MaxPacingRate
		if err := setsockopt(fd, unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, unsafe.Pointer(&rate), unsafe.Sizeof(rate)); err != nil {
			return fmt.Errorf("setsockopt SO_MAX_PACING_RATE %d: %w", rate, err)
		}
	}
	if len(s.Icmp6Filter) > 0 {
		if len(s.Icmp6Filter) != sizeofICMP6Filter {
			return fmt.Errorf("ICMPV6_FILTER of %d bytes", len(s.Icmp6Filter))
		}
		if err := setsockopt(fd, solICMPv6, icmpv6Filter, unsafe.Pointer(&s.Icmp6Filter[0]), sizeofICMP6Filter); err != nil {
			return fmt.Errorf("setsockopt ICMPV6_FILTER: %w", err)
		}
	}
	if err := joinMcast(fd, s); err != nil {
		return err
	}
	return SetFilter(fd, s.Filter, s.FilterLocked)
}

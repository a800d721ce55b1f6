package inetsk

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/internal/sockopt"
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
		case o.Level == unix.SOL_SOCKET && o.Name == unix.SO_TIMESTAMPING && sockopt.TimestampingRefusal(int(o.Value)) != "":
			return unsupported(s.Ino, "%s", sockopt.TimestampingRefusal(int(o.Value)))
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

// GetFilter is sockopt.GetFilter (kept here for the other socket kinds
// that use it).
func GetFilter(fd int) ([]byte, error) { return sockopt.GetFilter(fd) }

// SetFilter is sockopt.SetFilter.
func SetFilter(fd int, prog []byte, locked bool) error { return sockopt.SetFilter(fd, prog, locked) }

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

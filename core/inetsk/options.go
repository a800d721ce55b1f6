package inetsk

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/internal/sockopt"
)

// intOpt is an integer socket option kept in the image. Create sets it
// only when the fresh socket reads another value, so defaults stay
// defaults (and follow the sysctls of the host that restores).
type intOpt struct {
	name       string
	level, opt int
	family     int  // 0: both, else only this family
	tcp        bool // TCP only
	get        func(*imagepb.InetSocket) int
	set        func(*imagepb.InetSocket, int)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

var intOpts = []intOpt{
	{"SO_REUSEADDR", unix.SOL_SOCKET, unix.SO_REUSEADDR, 0, false,
		func(s *imagepb.InetSocket) int { return b2i(s.Reuseaddr) }, func(s *imagepb.InetSocket, v int) { s.Reuseaddr = v != 0 }},
	{"SO_REUSEPORT", unix.SOL_SOCKET, unix.SO_REUSEPORT, 0, false,
		func(s *imagepb.InetSocket) int { return b2i(s.Reuseport) }, func(s *imagepb.InetSocket, v int) { s.Reuseport = v != 0 }},
	{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 0, false,
		func(s *imagepb.InetSocket) int { return b2i(s.Keepalive) }, func(s *imagepb.InetSocket, v int) { s.Keepalive = v != 0 }},
	{"SO_BROADCAST", unix.SOL_SOCKET, unix.SO_BROADCAST, 0, false,
		func(s *imagepb.InetSocket) int { return b2i(s.Broadcast) }, func(s *imagepb.InetSocket, v int) { s.Broadcast = v != 0 }},
	{"SO_MARK", unix.SOL_SOCKET, unix.SO_MARK, 0, false,
		func(s *imagepb.InetSocket) int { return int(s.Mark) }, func(s *imagepb.InetSocket, v int) { s.Mark = uint32(v) }},
	{"SO_PRIORITY", unix.SOL_SOCKET, unix.SO_PRIORITY, 0, false,
		func(s *imagepb.InetSocket) int { return int(s.Priority) }, func(s *imagepb.InetSocket, v int) { s.Priority = int32(v) }},
	{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 0, true,
		func(s *imagepb.InetSocket) int { return b2i(s.Nodelay) }, func(s *imagepb.InetSocket, v int) { s.Nodelay = v != 0 }},
	{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 0, true,
		func(s *imagepb.InetSocket) int { return int(s.Keepidle) }, func(s *imagepb.InetSocket, v int) { s.Keepidle = int32(v) }},
	{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 0, true,
		func(s *imagepb.InetSocket) int { return int(s.Keepintvl) }, func(s *imagepb.InetSocket, v int) { s.Keepintvl = int32(v) }},
	{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 0, true,
		func(s *imagepb.InetSocket) int { return int(s.Keepcnt) }, func(s *imagepb.InetSocket, v int) { s.Keepcnt = int32(v) }},
	{"TCP_DEFER_ACCEPT", unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 0, true,
		func(s *imagepb.InetSocket) int { return int(s.DeferAccept) }, func(s *imagepb.InetSocket, v int) { s.DeferAccept = int32(v) }},
	{"IP_FREEBIND", unix.SOL_IP, unix.IP_FREEBIND, unix.AF_INET, false,
		func(s *imagepb.InetSocket) int { return b2i(s.Freebind) }, func(s *imagepb.InetSocket, v int) { s.Freebind = v != 0 }},
	{"IPV6_FREEBIND", unix.SOL_IPV6, unix.IPV6_FREEBIND, unix.AF_INET6, false,
		func(s *imagepb.InetSocket) int { return b2i(s.Freebind) }, func(s *imagepb.InetSocket, v int) { s.Freebind = v != 0 }},
	{"IP_BIND_ADDRESS_NO_PORT", unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 0, false,
		func(s *imagepb.InetSocket) int { return b2i(s.BindAddressNoPort) }, func(s *imagepb.InetSocket, v int) { s.BindAddressNoPort = v != 0 }},
	{"IP_TTL", unix.SOL_IP, unix.IP_TTL, unix.AF_INET, false,
		func(s *imagepb.InetSocket) int { return int(s.Ttl) }, func(s *imagepb.InetSocket, v int) { s.Ttl = int32(v) }},
	{"IP_TOS", unix.SOL_IP, unix.IP_TOS, unix.AF_INET, false,
		func(s *imagepb.InetSocket) int { return int(s.Tos) }, func(s *imagepb.InetSocket, v int) { s.Tos = int32(v) }},
	{"IPV6_UNICAST_HOPS", unix.SOL_IPV6, unix.IPV6_UNICAST_HOPS, unix.AF_INET6, false,
		func(s *imagepb.InetSocket) int { return int(s.Ttl) }, func(s *imagepb.InetSocket, v int) { s.Ttl = int32(v) }},
	{"IPV6_TCLASS", unix.SOL_IPV6, unix.IPV6_TCLASS, unix.AF_INET6, false,
		func(s *imagepb.InetSocket) int { return int(s.Tos) }, func(s *imagepb.InetSocket, v int) { s.Tos = int32(v) }},
	{"IPV6_V6ONLY", unix.SOL_IPV6, unix.IPV6_V6ONLY, unix.AF_INET6, false,
		func(s *imagepb.InetSocket) int { return b2i(s.V6Only) }, func(s *imagepb.InetSocket, v int) { s.V6Only = v != 0 }},
}

func (o *intOpt) applies(s *imagepb.InetSocket) bool {
	return (o.family == 0 || int32(o.family) == s.Family) && (!o.tcp || s.Protocol == unix.IPPROTO_TCP)
}

// dumpOptions reads every option of the image from fd.
func dumpOptions(fd int, s *imagepb.InetSocket) error {
	for i := range intOpts {
		o := &intOpts[i]
		if !o.applies(s) {
			continue
		}
		v, err := unix.GetsockoptInt(fd, o.level, o.opt)
		if err == unix.ENOPROTOOPT || err == unix.EOPNOTSUPP {
			continue // not for this socket (IPv4 options of a raw IPv6 socket): stays 0
		}
		if err != nil {
			return fmt.Errorf("inet socket:[%d]: getsockopt %s: %w", s.Ino, o.name, err)
		}
		o.set(s, v)
	}
	for _, b := range []struct {
		name string
		opt  int
		v    *uint32
	}{{"SO_SNDBUF", unix.SO_SNDBUF, &s.Sndbuf}, {"SO_RCVBUF", unix.SO_RCVBUF, &s.Rcvbuf}} {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, b.opt)
		if err != nil {
			return fmt.Errorf("inet socket:[%d]: getsockopt %s: %w", s.Ino, b.name, err)
		}
		*b.v = uint32(v)
	}
	for _, t := range []struct {
		name string
		opt  int
		v    *int64
	}{{"SO_RCVTIMEO", unix.SO_RCVTIMEO, &s.RcvtimeoUs}, {"SO_SNDTIMEO", unix.SO_SNDTIMEO, &s.SndtimeoUs}} {
		var err error
		if *t.v, err = sockopt.TimeoutUs(fd, t.opt); err != nil {
			return fmt.Errorf("inet socket:[%d]: getsockopt %s: %w", s.Ino, t.name, err)
		}
	}
	l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER)
	if err != nil {
		return fmt.Errorf("inet socket:[%d]: getsockopt SO_LINGER: %w", s.Ino, err)
	}
	s.Linger = -1
	if l.Onoff != 0 {
		s.Linger = l.Linger
	}
	if s.BindDev, err = unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); err != nil {
		return fmt.Errorf("inet socket:[%d]: getsockopt SO_BINDTODEVICE: %w", s.Ino, err)
	}
	return dumpMoreOptions(fd, s)
}

// applyOptions sets on fd (a fresh socket) every option of s that differs
// from what fd reads.
func applyOptions(fd int, s *imagepb.InetSocket) error {
	if s.BindDev != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, s.BindDev); err != nil {
			return fmt.Errorf("setsockopt SO_BINDTODEVICE %q: %w", s.BindDev, err)
		}
	}
	for i := range intOpts {
		o := &intOpts[i]
		if !o.applies(s) {
			continue
		}
		cur, err := unix.GetsockoptInt(fd, o.level, o.opt)
		if (err == unix.ENOPROTOOPT || err == unix.EOPNOTSUPP) && o.get(s) == 0 {
			continue // not for this socket, and not recorded
		}
		if err != nil {
			return fmt.Errorf("getsockopt %s: %w", o.name, err)
		}
		if want := o.get(s); cur != want {
			if err := unix.SetsockoptInt(fd, o.level, o.opt, want); err != nil {
				return fmt.Errorf("setsockopt %s %d: %w", o.name, want, err)
			}
		}
	}
	if err := setBuf(fd, "SO_SNDBUF", unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, s.Sndbuf, "wmem_max"); err != nil {
		return err
	}
	if err := setBuf(fd, "SO_RCVBUF", unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, s.Rcvbuf, "rmem_max"); err != nil {
		return err
	}
	for _, t := range []struct {
		name string
		opt  int
		us   int64
	}{{"SO_RCVTIMEO", unix.SO_RCVTIMEO, s.RcvtimeoUs}, {"SO_SNDTIMEO", unix.SO_SNDTIMEO, s.SndtimeoUs}} {
		if t.us == 0 {
			continue
		}
		if err := sockopt.SetTimeoutUs(fd, t.opt, t.us); err != nil {
			return fmt.Errorf("setsockopt %s: %w", t.name, err)
		}
	}
	if s.Linger >= 0 {
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: s.Linger}); err != nil {
			return fmt.Errorf("setsockopt SO_LINGER: %w", err)
		}
	}
	return applyMoreOptions(fd, s)
}

// setBuf makes fd read back want (the doubled value getsockopt gave at
// dump time; 0: not recorded) for a buffer size, with the FORCE variant
// when want/2 is above net.core.<sysctl>.
func setBuf(fd int, name string, opt, force int, want uint32, sysctl string) error {
	cur, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
	if err != nil {
		return fmt.Errorf("getsockopt %s: %w", name, err)
	}
	if want == 0 || uint32(cur) == want {
		return nil
	}
	v := int(want / 2)
	if max, err := readSysctl("net/core/" + sysctl); err != nil || v > max {
		opt, name = force, name+"FORCE"
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, v); err != nil {
		return fmt.Errorf("setsockopt %s %d: %w", name, v, err)
	}
	return nil
}

func readSysctl(name string) (int, error) {
	b, err := readFile("/proc/sys/" + name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(b)
}

func readFile(name string) (string, error) {
	b, err := os.ReadFile(name)
	return strings.TrimSpace(string(b)), err
}

func (o moreOpt) applies(s *imagepb.InetSocket) bool {
	if o.notConn && (s.Tcp != nil || (s.Protocol == unix.IPPROTO_TCP && s.State != TCPClose && s.State != TCPListen)) {
		return false
	}
	if o.raw && s.Type != unix.SOCK_RAW {
		return false
	}
	proto := int32(o.proto) == s.Protocol || (o.proto == unix.IPPROTO_UDP && isUDP(s.Protocol))
	return (o.family == 0 || int32(o.family) == s.Family) && (o.proto == 0 || proto)
}

// dumpMoreOptions records moreOpts in s.Opts.
func dumpMoreOptions(fd int, s *imagepb.InetSocket) error {
	for _, o := range moreOpts {
		if !o.applies(s) {
			continue
		}
		v, err := unix.GetsockoptInt(fd, o.level, o.opt)
		if err == unix.ENOPROTOOPT || err == unix.EOPNOTSUPP {
			continue // not in this kernel (or not for this socket): it cannot differ from a fresh socket's
		}
		if err != nil {
			return fmt.Errorf("inet socket:[%d]: getsockopt level %d option %d: %w", s.Ino, o.level, o.opt, err)
		}
		if o.level == unix.IPPROTO_TCP && o.opt == unix.TCP_MAXSEG {
			// the user's MSS, or else the current one (which a connect
			// attempt sets): only a value other than the current one is
			// the user's
			if info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil && uint32(v) == info.Snd_mss {
				continue
			}
		}
		s.Opts = append(s.Opts, &imagepb.InetOpt{Level: int32(o.level), Name: int32(o.opt), Value: int32(v)})
	}
	return dumpExtra(fd, s)
}

// applyMoreOptions sets the options of s.Opts that fd reads differently;
// only options of moreOpts are accepted.
func applyMoreOptions(fd int, s *imagepb.InetSocket) error {
	for _, io := range s.Opts {
		known := false
		for _, o := range moreOpts {
			known = known || (int32(o.level) == io.Level && int32(o.opt) == io.Name && o.applies(s))
		}
		if !known {
			return fmt.Errorf("option level %d, %d is not one the image may carry", io.Level, io.Name)
		}
		cur, err := unix.GetsockoptInt(fd, int(io.Level), int(io.Name))
		if err != nil {
			return fmt.Errorf("getsockopt level %d option %d: %w", io.Level, io.Name, err)
		}
		if cur != int(io.Value) {
			if err := unix.SetsockoptInt(fd, int(io.Level), int(io.Name), int(io.Value)); err != nil {
				return fmt.Errorf("setsockopt level %d option %d = %d: %w", io.Level, io.Name, io.Value, err)
			}
		}
	}
	return applyExtra(fd, s)
}

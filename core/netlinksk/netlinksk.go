// Package netlinksk dumps and restores netlink sockets (AF_NETLINK) of
// the protocols whose kernel side keeps nothing about a socket beyond what
// getsockname, getpeername and getsockopt show: NETLINK_ROUTE,
// NETLINK_SOCK_DIAG and NETLINK_KOBJECT_UEVENT. Other protocols (generic
// netlink families, netfilter queues, audit, ...) tie state to the port id
// and are refused by name, as are queued messages, a dump in progress and
// socket-level options the image does not carry.
//
// Like core/inetsk, Dump reads the dumper's copy of the socket; Create
// rebuilds it in the caller: socket, buffer sizes, options, filter, bind
// to the port id and the first 32 groups, the other groups joined, then
// connect.
package netlinksk

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/inetsk"
	"github.com/ctr-cr/ctr-cr/internal/sockcheck"
	"github.com/ctr-cr/ctr-cr/internal/sockdiag"
)

// UnsupportedError reports a netlink socket the image cannot carry.
type UnsupportedError struct {
	Ino    uint64
	Reason string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("netlink socket:[%d]: unsupported: %s", e.Ino, e.Reason)
}

func unsupported(ino uint64, format string, a ...any) error {
	return &UnsupportedError{Ino: ino, Reason: fmt.Sprintf(format, a...)}
}

// protocols are the netlink protocols kept.
var protocols = map[int]string{
	unix.NETLINK_ROUTE:          "NETLINK_ROUTE",
	unix.NETLINK_SOCK_DIAG:      "NETLINK_SOCK_DIAG",
	unix.NETLINK_KOBJECT_UEVENT: "NETLINK_KOBJECT_UEVENT",
}

// Options of SOL_NETLINK kept (each read with getsockopt).
var nlOpts = []int{
	unix.NETLINK_PKTINFO, unix.NETLINK_BROADCAST_ERROR, unix.NETLINK_NO_ENOBUFS,
	unix.NETLINK_LISTEN_ALL_NSID, unix.NETLINK_CAP_ACK, unix.NETLINK_EXT_ACK, unix.NETLINK_GET_STRICT_CHK,
}

// carried are the socket-level options the image keeps.
var carried = map[string]bool{"SO_PASSCRED": true, "SO_ATTACH_FILTER": true, "SO_LOCK_FILTER": true}

// Dump describes the netlink socket fd (inode ino). It only reads.
func Dump(fd int, ino uint64) (*imagepb.NetlinkSk, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Ino != ino {
		return nil, fmt.Errorf("netlink socket:[%d]: fd %d is not that socket (%v)", ino, fd, err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket:[%d]: SO_TYPE: %w", ino, err)
	}
	proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("netlink socket:[%d]: SO_PROTOCOL: %w", ino, err)
	}
	if _, ok := protocols[proto]; !ok {
		return nil, unsupported(ino, "netlink protocol %d (its kernel side may keep state the image does not)", proto)
	}
	s := &imagepb.NetlinkSk{Type: int32(typ), Protocol: int32(proto), Uid: st.Uid}
	if err := checkIdle(fd, ino); err != nil {
		return nil, err
	}
	if err := addresses(fd, ino, s); err != nil {
		return nil, err
	}
	for _, o := range nlOpts {
		v, err := unix.GetsockoptInt(fd, unix.SOL_NETLINK, o)
		if err == unix.ENOPROTOOPT {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("netlink socket:[%d]: getsockopt SOL_NETLINK %d: %w", ino, o, err)
		}
		s.Opts = append(s.Opts, &imagepb.InetOpt{Level: unix.SOL_NETLINK, Name: int32(o), Value: int32(v)})
	}
	return s, dumpSocketLevel(fd, s, ino)
}

// checkIdle refuses a socket with messages queued for reading or a dump
// in progress (NETLINK_DIAG's NDIAG_FLAG_CB_RUNNING).
func checkIdle(fd int, ino uint64) error {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(p, 0); err != nil {
		return fmt.Errorf("netlink socket:[%d]: poll: %w", ino, err)
	}
	if p[0].Revents&unix.POLLIN != 0 {
		var h [unix.SizeofNlMsghdr]byte
		n, _, _ := unix.Recvfrom(fd, h[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if n == len(h) {
			return unsupported(ino, "netlink messages queued for reading (the first of type %d)", binary.NativeEndian.Uint16(h[4:]))
		}
		return unsupported(ino, "netlink messages queued for reading")
	}
	if p[0].Revents&unix.POLLERR != 0 {
		return unsupported(ino, "a pending error (SO_ERROR, e.g. ENOBUFS)")
	}
	flags, found, err := diagFlags(ino)
	if err != nil {
		return fmt.Errorf("netlink socket:[%d]: %w", ino, err)
	}
	if found && flags&ndiagFlagCbRunning != 0 {
		return unsupported(ino, "a netlink dump in progress")
	}
	return nil
}

// addresses records the port id, groups and the connected peer.
func addresses(fd int, ino uint64, s *imagepb.NetlinkSk) error {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("netlink socket:[%d]: getsockname: %w", ino, err)
	}
	if a, ok := sa.(*unix.SockaddrNetlink); ok {
		s.Portid = a.Pid
	}
	pa, err := unix.Getpeername(fd)
	if err != nil {
		return fmt.Errorf("netlink socket:[%d]: getpeername: %w", ino, err)
	}
	if a, ok := pa.(*unix.SockaddrNetlink); ok {
		s.DstPortid = a.Pid
		if a.Groups != 0 {
			for g := uint32(0); g < 32; g++ {
				if a.Groups&(1<<g) != 0 {
					s.DstGroup = g + 1
					break
				}
			}
		}
	}
	buf := make([]uint32, 64)
	for {
		l := uint32(len(buf) * 4)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_NETLINK, unix.NETLINK_LIST_MEMBERSHIPS, uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			return fmt.Errorf("netlink socket:[%d]: NETLINK_LIST_MEMBERSHIPS: %w", ino, e)
		}
		if int(l) <= len(buf)*4 {
			buf = buf[:l/4]
			break
		}
		buf = make([]uint32, l/4)
	}
	for len(buf) > 0 && buf[len(buf)-1] == 0 {
		buf = buf[:len(buf)-1]
	}
	s.Groups = buf
	return nil
}

// dumpSocketLevel records buffer sizes, SO_PASSCRED and the filter, and
// refuses other socket-level options set away from a fresh socket's.
func dumpSocketLevel(fd int, s *imagepb.NetlinkSk, ino uint64) error {
	ref, err := unix.Socket(unix.AF_NETLINK, int(s.Type)|unix.SOCK_CLOEXEC, int(s.Protocol))
	if err != nil {
		return fmt.Errorf("netlink socket:[%d]: reference socket: %w", ino, err)
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
			return fmt.Errorf("netlink socket:[%d]: getsockopt buffer: %w", ino, err)
		}
		*b.v = uint32(v)
	}
	pc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED)
	if err != nil {
		return fmt.Errorf("netlink socket:[%d]: getsockopt SO_PASSCRED: %w", ino, err)
	}
	s.Passcred = pc != 0
	if s.Filter, err = inetsk.GetFilter(fd); err != nil {
		return fmt.Errorf("netlink socket:[%d]: getsockopt SO_GET_FILTER: %w", ino, err)
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_LOCK_FILTER); err == nil {
		s.FilterLocked = v != 0
	}
	return nil
}

// Constants of <linux/netlink_diag.h>.
const (
	sizeofNetlinkDiagReq = 20 // struct netlink_diag_req
	sizeofNetlinkDiagMsg = 28 // struct netlink_diag_msg
	ndiagShowFlags       = 0x8
	ndiagProtoAll        = 255
	netlinkDiagFlags     = 4 // NETLINK_DIAG_FLAGS attribute
	ndiagFlagCbRunning   = 0x1
)

// diagFlags returns the NETLINK_DIAG flags of the socket with inode ino in
// the calling thread's network namespace (found: listed; a socket never
// bound is not).
func diagFlags(ino uint64) (flags uint32, found bool, err error) {
	req := make([]byte, sizeofNetlinkDiagReq)
	req[0], req[1] = unix.AF_NETLINK, ndiagProtoAll
	ne := binary.NativeEndian
	ne.PutUint32(req[8:], ndiagShowFlags)
	ne.PutUint32(req[12:], ^uint32(0)) // no cookie
	ne.PutUint32(req[16:], ^uint32(0))
	err = sockdiag.Dump("netlink diag", req, func(m []byte) error {
		if len(m) < sizeofNetlinkDiagMsg || uint64(ne.Uint32(m[16:])) != ino {
			return nil
		}
		found = true
		for a := m[sizeofNetlinkDiagMsg:]; len(a) >= 4; {
			l := int(ne.Uint16(a))
			if l < 4 || l > len(a) {
				return fmt.Errorf("bad attribute length %d", l)
			}
			if ne.Uint16(a[2:])&0x3fff == netlinkDiagFlags && l >= 8 {
				flags = ne.Uint32(a[4:])
			}
			a = a[min((l+3)&^3, len(a)):]
		}
		return nil
	})
	return flags, found, err
}

// Create rebuilds s in the calling process and returns its fd (blocking,
// close-on-exec). On error nothing is left open.
func Create(s *imagepb.NetlinkSk) (fd int, err error) {
	if s == nil {
		return -1, fmt.Errorf("netlink socket entry without its description")
	}
	if _, ok := protocols[int(s.Protocol)]; !ok || (s.Type != unix.SOCK_RAW && s.Type != unix.SOCK_DGRAM) {
		return -1, fmt.Errorf("netlink socket: type %d, protocol %d not supported", s.Type, s.Protocol)
	}
	if len(s.Groups) > 1<<16 {
		return -1, fmt.Errorf("netlink socket: %d group words", len(s.Groups))
	}
	what := fmt.Sprintf("netlink socket (%s, port id %d)", protocols[int(s.Protocol)], s.Portid)
	fd, err = unix.Socket(unix.AF_NETLINK, int(s.Type)|unix.SOCK_CLOEXEC, int(s.Protocol))
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

func setup(fd int, s *imagepb.NetlinkSk) error {
	if err := sockcheck.SetBuf(fd, "SO_SNDBUF", unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, s.Sndbuf); err != nil {
		return err
	}
	if err := sockcheck.SetBuf(fd, "SO_RCVBUF", unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, s.Rcvbuf); err != nil {
		return err
	}
	if s.Passcred {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
			return fmt.Errorf("SO_PASSCRED: %w", err)
		}
	}
	for _, o := range s.Opts {
		if o.Level != unix.SOL_NETLINK || !isNlOpt(int(o.Name)) {
			return fmt.Errorf("option level %d, %d is not one the image may carry", o.Level, o.Name)
		}
		if cur, err := unix.GetsockoptInt(fd, unix.SOL_NETLINK, int(o.Name)); err == nil && cur == int(o.Value) {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, int(o.Name), int(o.Value)); err != nil {
			return fmt.Errorf("setsockopt SOL_NETLINK %d = %d: %w", o.Name, o.Value, err)
		}
	}
	if err := inetsk.SetFilter(fd, s.Filter, s.FilterLocked); err != nil {
		return err
	}
	var first uint32
	if len(s.Groups) > 0 {
		first = s.Groups[0]
	}
	if s.Portid != 0 || first != 0 {
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: s.Portid, Groups: first}); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
	}
	for w := 1; w < len(s.Groups); w++ {
		for b := 0; b < 32; b++ {
			if s.Groups[w]&(1<<b) == 0 {
				continue
			}
			if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, w*32+b+1); err != nil {
				return fmt.Errorf("NETLINK_ADD_MEMBERSHIP %d: %w", w*32+b+1, err)
			}
		}
	}
	if s.DstPortid != 0 || s.DstGroup != 0 {
		if s.DstGroup > 32 {
			return fmt.Errorf("connected to group %d", s.DstGroup)
		}
		var g uint32
		if s.DstGroup > 0 {
			g = 1 << (s.DstGroup - 1)
		}
		if err := unix.Connect(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: s.DstPortid, Groups: g}); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
	}
	return nil
}

func isNlOpt(o int) bool {
	for _, k := range nlOpts {
		if k == o {
			return true
		}
	}
	return false
}

// Describe is a one-line summary: "NETLINK_ROUTE port 42 groups 0x1".
func Describe(s *imagepb.NetlinkSk) string {
	out := fmt.Sprintf("%s port %d", protocols[int(s.Protocol)], s.Portid)
	if len(s.Groups) > 0 {
		out += fmt.Sprintf(" groups %#x", s.Groups)
	}
	if s.DstPortid != 0 || s.DstGroup != 0 {
		out += fmt.Sprintf(" -> port %d group %d", s.DstPortid, s.DstGroup)
	}
	return out
}

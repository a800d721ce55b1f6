package inetsk

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// No getsockopt lists the multicast groups a socket joined. Every group
// some socket of the namespace joined is in /proc/net/igmp (igmp6) for its
// interface, and joining a group the socket already holds fails with
// EADDRINUSE: dumpMcast probes each listed (group, interface) on the
// socket, and leaves at once the groups it joined itself. The interface
// already holds those groups, so this sends no membership report of its
// own (unless another socket holds the group source-specific only).

// mcastCand is a (group, interface) pair of /proc/net/igmp or igmp6.
type mcastCand struct {
	group   []byte
	ifindex int
}

// mcastGroups reads the groups joined on the interfaces of the calling
// thread's network namespace, of IPv4 (v6 false) or IPv6.
func mcastGroups(v6 bool) ([]mcastCand, error) {
	name := "/proc/thread-self/net/igmp"
	if v6 {
		name += "6"
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mcastCand
	idx := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fs := strings.Fields(line)
		if len(fs) < 3 {
			continue
		}
		if v6 {
			// "idx dev group-hex users flags timer"
			i, err1 := strconv.Atoi(fs[0])
			g, err2 := hex.DecodeString(fs[2])
			if err1 == nil && err2 == nil && len(g) == 16 {
				out = append(out, mcastCand{g, i})
			}
			continue
		}
		if line[0] != '\t' && line[0] != ' ' {
			// "idx dev : count querier"
			if i, err := strconv.Atoi(fs[0]); err == nil {
				idx = i
			}
			continue
		}
		// "\t\t\tgroup users timer reporter": the group printed as the
		// in-memory (network order) word in hex
		v, err := strconv.ParseUint(fs[0], 16, 32)
		if err != nil || idx == 0 {
			continue
		}
		g := make([]byte, 4)
		binary.NativeEndian.PutUint32(g, uint32(v))
		out = append(out, mcastCand{g, idx})
	}
	return out, sc.Err()
}

// groupFilter is struct group_filter with room for one source.
type groupFilter struct {
	Interface uint32
	_         uint32
	Group     [128]byte
	Fmode     uint32
	Numsrc    uint32
	Slist     [128]byte
}

// mcastMember probes whether fd holds group c (see the comment above).
func mcastMember(fd int, c mcastCand) (bool, error) {
	var join, drop, level int
	var p unsafe.Pointer
	var l uintptr
	if len(c.group) == 4 {
		m := unix.IPMreqn{Ifindex: int32(c.ifindex)}
		copy(m.Multiaddr[:], c.group)
		join, drop, level, p, l = unix.IP_ADD_MEMBERSHIP, unix.IP_DROP_MEMBERSHIP, unix.SOL_IP, unsafe.Pointer(&m), unsafe.Sizeof(m)
	} else {
		m := unix.IPv6Mreq{Interface: uint32(c.ifindex)}
		copy(m.Multiaddr[:], c.group)
		join, drop, level, p, l = unix.IPV6_ADD_MEMBERSHIP, unix.IPV6_DROP_MEMBERSHIP, unix.SOL_IPV6, unsafe.Pointer(&m), unsafe.Sizeof(m)
	}
	err := setsockopt(fd, level, join, p, l)
	switch err {
	case unix.EADDRINUSE:
		return true, nil
	case nil:
		if err := setsockopt(fd, level, drop, p, l); err != nil {
			return false, fmt.Errorf("leaving the probed group again: %w", err)
		}
		return false, nil
	case unix.ENODEV, unix.EADDRNOTAVAIL:
		return false, nil // interface gone meanwhile
	case unix.ENOPROTOOPT:
		return false, nil // a raw IPv6 socket: no IPv4 groups
	case unix.ENOBUFS:
		return false, nil // at igmp_max_memberships: a member would have answered EADDRINUSE first
	}
	return false, err
}

// anySource reports whether the membership c of fd is a plain one
// (exclude mode, no sources: IP_ADD_MEMBERSHIP).
func anySource(fd int, c mcastCand) (bool, error) {
	var gf groupFilter
	gf.Interface = uint32(c.ifindex)
	level := unix.SOL_IP
	if len(c.group) == 4 {
		binary.NativeEndian.PutUint16(gf.Group[0:], unix.AF_INET)
		copy(gf.Group[4:], c.group)
	} else {
		level = unix.SOL_IPV6
		binary.NativeEndian.PutUint16(gf.Group[0:], unix.AF_INET6)
		copy(gf.Group[8:], c.group)
	}
	l := uint32(unsafe.Sizeof(gf))
	if err := getsockopt(fd, level, unix.MCAST_MSFILTER, unsafe.Pointer(&gf), &l); err != nil {
		return false, err
	}
	return gf.Fmode == unix.MCAST_EXCLUDE && gf.Numsrc == 0, nil
}

// dumpMcast records the multicast groups a UDP socket joined; a
// source-specific membership is refused.
func dumpMcast(fd int, s *imagepb.InetSocket) error {
	if s.Protocol == unix.IPPROTO_TCP {
		return nil // TCP cannot join groups
	}
	var cands []mcastCand
	for _, v6 := range []bool{false, true} {
		if v6 && s.Family != unix.AF_INET6 {
			continue
		}
		cs, err := mcastGroups(v6)
		if err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("inet socket:[%d]: multicast groups: %w", s.Ino, err)
		}
		cands = append(cands, cs...)
	}
	for _, c := range cands {
		in, err := mcastMember(fd, c)
		if err != nil {
			return fmt.Errorf("inet socket:[%d]: probing multicast group %s on interface %d: %w", s.Ino, addrString(c.group), c.ifindex, err)
		}
		if !in {
			continue
		}
		plain, err := anySource(fd, c)
		if err != nil {
			return fmt.Errorf("inet socket:[%d]: source filter of multicast group %s: %w", s.Ino, addrString(c.group), err)
		}
		if !plain {
			return unsupported(s.Ino, "source-specific multicast membership of %s on interface %d", addrString(c.group), c.ifindex)
		}
		s.McastGroups = append(s.McastGroups, &imagepb.InetMcastGroup{Group: c.group, Ifindex: int32(c.ifindex)})
	}
	return nil
}

// joinMcast joins the groups of s on fd.
func joinMcast(fd int, s *imagepb.InetSocket) error {
	for _, g := range s.McastGroups {
		if len(g.Group) != 4 && len(g.Group) != 16 {
			return fmt.Errorf("multicast group of %d bytes", len(g.Group))
		}
		if err := joinGroup(fd, g); err != nil {
			return fmt.Errorf("joining multicast group %s on interface %d: %w", addrString(g.Group), g.Ifindex, err)
		}
	}
	return nil
}

func joinGroup(fd int, g *imagepb.InetMcastGroup) error {
	if len(g.Group) == 4 {
		m := unix.IPMreqn{Ifindex: g.Ifindex}
		copy(m.Multiaddr[:], g.Group)
		return unix.SetsockoptIPMreqn(fd, unix.SOL_IP, unix.IP_ADD_MEMBERSHIP, &m)
	}
	m := unix.IPv6Mreq{Interface: uint32(g.Ifindex)}
	copy(m.Multiaddr[:], g.Group)
	return unix.SetsockoptIPv6Mreq(fd, unix.SOL_IPV6, unix.IPV6_ADD_MEMBERSHIP, &m)
}

func addrString(b []byte) string {
	a, ok := netip.AddrFromSlice(b)
	if !ok {
		return fmt.Sprintf("%x", b)
	}
	return a.String()
}

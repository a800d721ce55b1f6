package netdev

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/threadns"
)

// SetIndex gives the existing link name in ns the ifindex index. The kernel
// cannot renumber a link in place, so the link makes a round trip through a
// private scratch netns: out with RTM_NEWLINK{IFLA_NET_NS_FD}, back with
// IFLA_NEW_IFINDEX (without it a move into a netns where the old index is
// taken silently renumbers). A veth keeps its peer. The move drops what the
// kernel ties to a netns: the link comes back down, without addresses,
// routes or bridge master, so call SetIndex before configuring the link
// (e.g. on a link a container runtime made before Restore adds the rest).
// An index already used in ns gives ErrIndexTaken and changes nothing. If
// the move back with the wanted index fails, the link is moved back with an
// index the kernel chooses and the error says so.
func SetIndex(ns netns.NsHandle, name string, index int) error {
	if index < 1 || index > 1<<31-1 {
		return fmt.Errorf("netdev set index: link %s: ifindex %d out of range", name, index)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netdev set index: netlink handle in netns: %w", err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("netdev set index: link %s: %w", name, err)
	}
	if l.Attrs().Index == index {
		return nil
	}
	if o, err := h.LinkByIndex(index); err == nil {
		return fmt.Errorf("netdev set index: link %s: ifindex %d is taken by %s: %w", name, index, o.Attrs().Name, ErrIndexTaken)
	}
	scratch, err := newScratchNetns()
	if err != nil {
		return fmt.Errorf("netdev set index: link %s: %w", name, err)
	}
	defer scratch.Close() // destroys the scratch netns
	if err := moveLink(ns, l.Attrs().Index, scratch, 0); err != nil {
		return fmt.Errorf("netdev set index: link %s: move to a scratch netns: %w", name, err)
	}
	hs, err := netlink.NewHandleAt(scratch)
	if err == nil {
		defer hs.Close()
		l, err = hs.LinkByName(name)
	}
	if err != nil {
		return fmt.Errorf("netdev set index: link %s: find it in the scratch netns (it dies with it): %w", name, err)
	}
	if err := moveLink(scratch, l.Attrs().Index, ns, index); err != nil {
		if err2 := moveLink(scratch, l.Attrs().Index, ns, 0); err2 != nil {
			return fmt.Errorf("netdev set index: link %s: move back with ifindex %d: %w; move back at all: %v (the link is lost)", name, index, err, err2)
		}
		return fmt.Errorf("netdev set index: link %s: move back with ifindex %d: %w (moved back with a kernel-chosen index)", name, index, err)
	}
	if l, err = h.LinkByName(name); err != nil || l.Attrs().Index != index {
		return fmt.Errorf("netdev set index: link %s: not at ifindex %d after the move (%v)", name, index, err)
	}
	return nil
}

// moveLink moves the link at ifindex from netns src to netns dst; a
// nonzero newIndex is asked for with IFLA_NEW_IFINDEX.
func moveLink(src netns.NsHandle, ifindex int, dst netns.NsHandle, newIndex int) error {
	s, err := nl.GetNetlinkSocketAt(src, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket in netns: %w", err)
	}
	defer s.Close()
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(ifindex)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(dst))))
	if newIndex != 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_NEW_IFINDEX, nl.Uint32Attr(uint32(newIndex))))
	}
	_, err = req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// newScratchNetns makes an anonymous netns, held only by the returned
// handle, without moving any other thread: a thread of its own
// (threadns.Locked, dropped after) unshares, opens the new netns and goes
// back (best effort, for the parked main thread's sake).
func newScratchNetns() (netns.NsHandle, error) {
	h := netns.None()
	err := threadns.Locked(func() error {
		orig, err := netns.Get()
		if err != nil {
			return fmt.Errorf("open the thread's netns: %w", err)
		}
		defer func() {
			netns.Set(orig)
			orig.Close()
		}()
		if h, err = netns.New(); err != nil {
			return fmt.Errorf("new scratch netns: %w", err)
		}
		return nil
	})
	return h, err
}

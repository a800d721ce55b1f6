package netdev

import (
	"errors"
	"fmt"
	"net"
	"sort"

	"github.com/ctr-cr/ctr-cr/internal/cleanup"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// Outside is the netns where the outside ends of veths are created (the
	// host netns, or whichever netns stands for it). It must be open when
	// the state has a veth whose peer was outside; Restore never guesses it.
	// The zero value (fd 0) counts as not given, like netns.None().
	Outside netns.NsHandle
	// OutsideByHook leaves the wiring of outside peers to the caller (an
	// OCI hook, say): each is still created in Outside with its name, MAC
	// and MTU (a veth is born as a pair, and the inside end needs its
	// ifindex), but stays down and joins no bridge.
	OutsideByHook bool
	// Logf, when set, receives notes about choices Restore made (an outside
	// peer that could not keep its ifindex, a recorded bridge missing).
	Logf func(format string, args ...any)
	// CheckSysctl, when set, is asked before each sysctl write (a key
	// under /proc/sys/net whose value in the fresh namespace differs from
	// the saved one); an error stops the restore. The caller holds an
	// image's sysctls to what its container may set itself.
	CheckSysctl func(key, have, want string) error
}

func (o *RestoreOptions) logf(format string, args ...any) {
	if o != nil && o.Logf != nil {
		o.Logf(format, args...)
	}
}

// Restore rebuilds st in the netns ns, which must be fresh (as a container
// runtime makes it: only lo, up or down). It validates st first and checks,
// before it changes anything, that every ifindex and name it needs is free
// (ErrIndexTaken otherwise). Then, in this order: links with their ifindex,
// name, MAC, MTU and txqlen (bridges, dummies, ifbs, veths; a veth whose peer was
// outside gets its peer created in opts.Outside with the same name, MAC and
// MTU, and the same ifindex when that index is free there), lo's MTU,
// sysctls, bridge ports (the outside peer joins its recorded bridge when a
// bridge of that name exists in the outside netns), promisc/allmulti/noarp,
// addresses (IPv6 ones with nodad, so that they are usable at once), link
// state up/down, routes (retried until no more can be added, so that a route
// whose gateway needs another route comes after it), rules.
//
// On failure everything Restore created is removed again: links in ns (and
// with them their outside peers), routes and rules; the error names the
// object. Sysctls and lo's state are not rolled back: the caller throws the
// fresh netns away.
func Restore(ns netns.NsHandle, st *State, opts *RestoreOptions) (err error) {
	if err := st.Validate(); err != nil {
		return fmt.Errorf("netdev restore: %w", err)
	}
	hasOutside := false
	for _, l := range st.Links {
		if !restorable[l.Kind] {
			return fmt.Errorf("netdev restore: link %s: kind %q cannot be restored", l.Name, l.Kind)
		}
		if l.Peer != nil && l.Peer.Where == PeerOutside {
			hasOutside = true
		}
	}
	if !isOpen(ns) {
		return errors.New("netdev restore: netns handle is not open")
	}
	if hasOutside && (opts == nil || !isOpen(opts.Outside)) {
		return errors.New("netdev restore: the state has veths with an outside peer but no outside netns was given")
	}

	r := &restorer{st: st, opts: opts, ns: ns, u: &cleanup.Stack{}, peerIndex: map[int]int{}}
	if r.h, err = netlink.NewHandleAt(ns); err != nil {
		return fmt.Errorf("netdev restore: netlink handle in netns: %w", err)
	}
	defer r.h.Close()
	if hasOutside {
		if r.ho, err = netlink.NewHandleAt(opts.Outside); err != nil {
			return fmt.Errorf("netdev restore: netlink handle in the outside netns: %w", err)
		}
		defer r.ho.Close()
	}
	defer func() {
		if err != nil {
			if uerr := r.u.Run(); uerr != nil {
				err = errors.Join(err, fmt.Errorf("netdev restore: undo: %w", uerr))
			}
		}
	}()
	for _, step := range []func() error{r.preflight, r.createLinks, r.loopback, r.sysctls, r.masters,
		r.flags, r.addrs, r.linksUp, r.routes, r.rules} {
		if err := step(); err != nil {
			return fmt.Errorf("netdev restore: %w", err)
		}
	}
	r.u.Release()
	return nil
}

type restorer struct {
	st   *State
	opts *RestoreOptions
	ns   netns.NsHandle
	h    *netlink.Handle
	ho   *netlink.Handle // outside netns, nil when not needed
	u    *cleanup.Stack
	// peerIndex: ifindex to ask for each outside peer (by inside ifindex);
	// 0 lets the kernel choose.
	peerIndex map[int]int
	// peerMaster: the bridge to attach each outside peer to (by inside ifindex).
	peerMaster map[int]netlink.Link
}

func (r *restorer) preflight() error {
	cur, err := r.h.LinkList()
	if err != nil {
		return fmt.Errorf("list links in the target netns: %w", err)
	}
	byIndex, byName := map[int]string{}, map[string]bool{}
	for _, l := range cur {
		byIndex[l.Attrs().Index], byName[l.Attrs().Name] = l.Attrs().Name, true
	}
	var outIndex map[int]string
	var outByName map[string]netlink.Link
	if r.ho != nil {
		out, err := r.ho.LinkList()
		if err != nil {
			return fmt.Errorf("list links in the outside netns: %w", err)
		}
		outIndex, outByName = map[int]string{}, map[string]netlink.Link{}
		for _, l := range out {
			outIndex[l.Attrs().Index], outByName[l.Attrs().Name] = l.Attrs().Name, l
		}
	}
	r.peerMaster = map[int]netlink.Link{}
	for _, l := range r.st.Links {
		if l.Kind == KindLoopback {
			if byIndex[1] != l.Name {
				return fmt.Errorf("link %s (loopback): the target netns has %q at ifindex 1", l.Name, byIndex[1])
			}
			continue
		}
		if name, ok := byIndex[l.Index]; ok {
			return fmt.Errorf("link %s (%s): ifindex %d is taken by %s in the target netns: %w", l.Name, l.Kind, l.Index, name, ErrIndexTaken)
		}
		if byName[l.Name] {
			return fmt.Errorf("link %s (%s): the name is taken in the target netns: %w", l.Name, l.Kind, ErrIndexTaken)
		}
		p := l.Peer
		if p == nil || p.Where != PeerOutside {
			continue
		}
		if outByName[p.Name] != nil {
			return fmt.Errorf("link %s (veth): peer name %s is taken in the outside netns: %w", l.Name, p.Name, ErrIndexTaken)
		}
		if name, ok := outIndex[p.Index]; ok || p.Index == 0 {
			r.opts.logf("netdev restore: link %s: outside peer %s cannot keep ifindex %d (taken by %s): the kernel chooses", l.Name, p.Name, p.Index, name)
		} else {
			r.peerIndex[l.Index] = p.Index
		}
		if p.Master != "" && !r.opts.OutsideByHook {
			m := outByName[p.Master]
			if m == nil || m.Type() != KindBridge {
				r.opts.logf("netdev restore: link %s: outside peer %s: bridge %s not found in the outside netns: left unattached", l.Name, p.Name, p.Master)
			} else {
				r.peerMaster[l.Index] = m
			}
		}
	}
	return nil
}

// deleteLink removes the link at index in h's netns if it still has the name
// Restore gave it.
func deleteLink(h *netlink.Handle, index int, name string) error {
	l, err := h.LinkByIndex(index)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil
		}
		return fmt.Errorf("link %s: look up ifindex %d: %w", name, index, err)
	}
	if l.Attrs().Name != name {
		return nil
	}
	if err := h.LinkDel(l); err != nil {
		return fmt.Errorf("link %s: delete: %w", name, err)
	}
	return nil
}

func parseMAC(s string) net.HardwareAddr {
	if s == "" {
		return nil
	}
	hw, _ := net.ParseMAC(s) // validated
	return hw
}

func (r *restorer) createLinks() error {
	links := append([]Link(nil), r.st.Links...)
	rank := map[string]int{KindBridge: 0, KindDummy: 1, KindIfb: 1, KindVeth: 2}
	sort.SliceStable(links, func(i, j int) bool { return rank[links[i].Kind] < rank[links[j].Kind] })
	byIndex := map[int]Link{}
	for _, l := range links {
		byIndex[l.Index] = l
	}
	for _, l := range links {
		l := l
		switch l.Kind {
		case KindLoopback:
			continue
		case KindBridge, KindDummy, KindIfb:
			la := netlink.NewLinkAttrs()
			la.Index, la.Name, la.MTU, la.HardwareAddr = l.Index, l.Name, l.MTU, parseMAC(l.MAC)
			if l.TxQLen > 0 {
				la.TxQLen = l.TxQLen
			}
			var nl netlink.Link = &netlink.Dummy{LinkAttrs: la}
			switch l.Kind {
			case KindBridge:
				nl = &netlink.Bridge{LinkAttrs: la}
			case KindIfb:
				nl = &netlink.Ifb{LinkAttrs: la}
			}
			if err := r.h.LinkAdd(nl); err != nil {
				return fmt.Errorf("link %s (%s, ifindex %d): create: %w", l.Name, l.Kind, l.Index, taken(err))
			}
			r.u.Push(func() error { return deleteLink(r.h, l.Index, l.Name) })
		case KindVeth:
			p := l.Peer
			a := vethEnd{Name: l.Name, Index: l.Index, MAC: parseMAC(l.MAC), MTU: l.MTU, TxQLen: l.TxQLen}
			if p.Where == PeerSelf {
				if p.Index < l.Index {
					continue // created with its peer
				}
				o := byIndex[p.Index]
				b := vethEnd{Name: o.Name, Index: o.Index, MAC: parseMAC(o.MAC), MTU: o.MTU, TxQLen: o.TxQLen}
				if err := createVeth(r.ns, a, b, netns.None()); err != nil {
					return fmt.Errorf("link %s (veth, ifindex %d, peer %s ifindex %d): create: %w", l.Name, l.Index, o.Name, o.Index, taken(err))
				}
				r.u.Push(func() error { return deleteLink(r.h, l.Index, l.Name) })
				if err := r.checkIndex(o.Index, o.Name); err != nil {
					return err
				}
			} else {
				b := vethEnd{Name: p.Name, Index: r.peerIndex[l.Index], MAC: parseMAC(p.MAC), MTU: p.MTU, TxQLen: p.TxQLen}
				if err := createVeth(r.ns, a, b, r.opts.Outside); err != nil {
					return fmt.Errorf("link %s (veth, ifindex %d, outside peer %s ifindex %d): create: %w", l.Name, l.Index, p.Name, b.Index, taken(err))
				}
				// Deleting our end deletes the outside one too.
				r.u.Push(func() error { return deleteLink(r.h, l.Index, l.Name) })
				pl, err := r.ho.LinkByName(p.Name)
				if err != nil {
					return fmt.Errorf("link %s (veth): outside peer %s: %w", l.Name, p.Name, err)
				}
				if pl.Attrs().ParentIndex != l.Index || (b.Index != 0 && pl.Attrs().Index != b.Index) {
					return fmt.Errorf("link %s (veth): outside peer %s is at ifindex %d with peer %d, want %d with peer %d",
						l.Name, p.Name, pl.Attrs().Index, pl.Attrs().ParentIndex, b.Index, l.Index)
				}
			}
		}
		if err := r.checkIndex(l.Index, l.Name); err != nil {
			return err
		}
	}
	return nil
}

// taken adds ErrIndexTaken to an EEXIST from the kernel (an index or name
// taken between the preflight check and the create).
func taken(err error) error {
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%w (%w)", err, ErrIndexTaken)
	}
	return err
}

// checkIndex verifies that name got its ifindex.
func (r *restorer) checkIndex(index int, name string) error {
	l, err := r.h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: look up after create: %w", name, err)
	}
	if l.Attrs().Index != index {
		return fmt.Errorf("link %s: created at ifindex %d, want %d", name, l.Attrs().Index, index)
	}
	return nil
}

func (r *restorer) link(l Link) (netlink.Link, error) {
	nl, err := r.h.LinkByIndex(l.Index)
	if err != nil {
		return nil, fmt.Errorf("link %s: look up ifindex %d: %w", l.Name, l.Index, err)
	}
	return nl, nil
}

func (r *restorer) loopback() error {
	for _, l := range r.st.Links {
		if l.Kind != KindLoopback || l.MTU == 0 {
			continue
		}
		nl, err := r.link(l)
		if err != nil {
			return err
		}
		if nl.Attrs().MTU != l.MTU {
			if err := r.h.LinkSetMTU(nl, l.MTU); err != nil {
				return fmt.Errorf("link %s: set mtu %d: %w", l.Name, l.MTU, err)
			}
		}
		if l.TxQLen > 0 && nl.Attrs().TxQLen != l.TxQLen {
			if err := r.h.LinkSetTxQLen(nl, l.TxQLen); err != nil {
				return fmt.Errorf("link %s: set txqlen %d: %w", l.Name, l.TxQLen, err)
			}
		}
	}
	return nil
}

func (r *restorer) sysctls() error {
	if len(r.st.Sysctls) == 0 {
		return nil
	}
	return writeSysctls(r.ns, r.st.Sysctls, r.opts.logf, r.opts.CheckSysctl)
}

func (r *restorer) masters() error {
	for _, l := range r.st.Links {
		if l.Master != 0 {
			nl, err := r.link(l)
			if err != nil {
				return err
			}
			if err := r.h.LinkSetMasterByIndex(nl, l.Master); err != nil {
				return fmt.Errorf("link %s: attach to bridge ifindex %d: %w", l.Name, l.Master, err)
			}
		}
		if br := r.peerMaster[l.Index]; br != nil {
			pl, err := r.ho.LinkByName(l.Peer.Name)
			if err != nil {
				return fmt.Errorf("link %s (veth): outside peer %s: %w", l.Name, l.Peer.Name, err)
			}
			if err := r.ho.LinkSetMaster(pl, br); err != nil {
				return fmt.Errorf("link %s (veth): attach outside peer %s to bridge %s: %w", l.Name, l.Peer.Name, br.Attrs().Name, err)
			}
		}
	}
	return nil
}

func (r *restorer) flags() error {
	for _, l := range r.st.Links {
		if !l.Promisc && !l.Allmulti && !l.NoARP {
			continue
		}
		nl, err := r.link(l)
		if err != nil {
			return err
		}
		if l.Promisc {
			if err := r.h.SetPromiscOn(nl); err != nil {
				return fmt.Errorf("link %s: promisc on: %w", l.Name, err)
			}
		}
		if l.Allmulti {
			if err := r.h.LinkSetAllmulticastOn(nl); err != nil {
				return fmt.Errorf("link %s: allmulti on: %w", l.Name, err)
			}
		}
		if l.NoARP {
			if err := r.h.LinkSetARPOff(nl); err != nil {
				return fmt.Errorf("link %s: noarp: %w", l.Name, err)
			}
		}
	}
	return nil
}

func (r *restorer) addrs() error {
	for _, a := range r.st.Addrs {
		l := r.st.Links[indexOf(r.st.Links, a.Link)]
		nl, err := r.link(l)
		if err != nil {
			return err
		}
		ipn, fam, _ := parsePrefix(a.CIDR)
		na := &netlink.Addr{IPNet: ipn, Label: a.Label, Scope: a.Scope, Flags: a.Flags &^ unix.IFA_F_PERMANENT}
		if fam == 6 {
			na.Flags |= unix.IFA_F_NODAD
		}
		if a.Peer != "" {
			na.Peer, _, _ = parsePrefix(a.Peer)
		}
		if a.Broadcast != "" {
			na.Broadcast = net.ParseIP(a.Broadcast).To4()
		} else if fam == 4 {
			// The library computes a broadcast address when none is
			// given; 0.0.0.0 tells it to send none, as dumped.
			na.Broadcast = net.IPv4zero
		}
		if err := r.h.AddrReplace(nl, na); err != nil {
			return fmt.Errorf("address %s on link %s: add: %w", a.CIDR, l.Name, err)
		}
	}
	return nil
}

func (r *restorer) linksUp() error {
	links := append([]Link(nil), r.st.Links...)
	rank := map[string]int{KindLoopback: 0, KindBridge: 1}
	sort.SliceStable(links, func(i, j int) bool {
		ri, ok := rank[links[i].Kind]
		if !ok {
			ri = 2
		}
		rj, ok := rank[links[j].Kind]
		if !ok {
			rj = 2
		}
		return ri < rj
	})
	for _, l := range links {
		nl, err := r.link(l)
		if err != nil {
			return err
		}
		isUp := nl.Attrs().Flags&net.FlagUp != 0
		switch {
		case l.Up && !isUp:
			err = r.h.LinkSetUp(nl)
		case !l.Up && isUp:
			err = r.h.LinkSetDown(nl)
		}
		if err != nil {
			return fmt.Errorf("link %s: set up=%v: %w", l.Name, l.Up, err)
		}
		if p := l.Peer; p != nil && p.Where == PeerOutside && p.Up && !r.opts.OutsideByHook {
			pl, err := r.ho.LinkByName(p.Name)
			if err == nil {
				err = r.ho.LinkSetUp(pl)
			}
			if err != nil {
				return fmt.Errorf("link %s (veth): outside peer %s: set up: %w", l.Name, p.Name, err)
			}
		}
	}
	return nil
}

func (r *restorer) toNetlinkRoute(rt Route) *netlink.Route {
	dst, _, _ := parsePrefix(rt.Dst)
	dst.IP = dst.IP.Mask(dst.Mask)
	nr := &netlink.Route{Family: rt.Family, Table: rt.Table, Type: rt.Type, Dst: dst, LinkIndex: rt.Link,
		Priority: rt.Metric, Scope: netlink.Scope(rt.Scope), Protocol: netlink.RouteProtocol(rt.Protocol),
		Tos: rt.Tos, MTU: rt.MTU, AdvMSS: rt.AdvMSS}
	if rt.Src != "" {
		nr.Src = net.ParseIP(rt.Src)
	}
	if rt.Gw != "" {
		nr.Gw = net.ParseIP(rt.Gw)
	}
	if rt.OnLink {
		nr.Flags |= unix.RTNH_F_ONLINK
	}
	for _, nh := range rt.Nexthops {
		ni := &netlink.NexthopInfo{LinkIndex: nh.Link, Hops: nh.Weight}
		if nh.Gw != "" {
			ni.Gw = net.ParseIP(nh.Gw)
		}
		if nh.OnLink {
			ni.Flags |= unix.RTNH_F_ONLINK
		}
		nr.MultiPath = append(nr.MultiPath, ni)
	}
	return nr
}

// routes adds the routes in passes: a route whose gateway is reachable only
// through another recorded route fails until that one is in, so each pass
// retries what failed, and Restore gives up when a pass adds nothing.
func (r *restorer) routes() error {
	pending := r.st.Routes
	for len(pending) > 0 {
		var failed []Route
		var firstErr error
		for _, rt := range pending {
			nr := r.toNetlinkRoute(rt)
			err := r.h.RouteAdd(nr)
			if errors.Is(err, unix.EEXIST) {
				continue // the kernel made it already
			}
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("route %s via %q dev ifindex %d table %d: add: %w", rt.Dst, rt.Gw, rt.Link, rt.Table, err)
				}
				failed = append(failed, rt)
				continue
			}
			r.u.Push(func() error {
				if err := r.h.RouteDel(nr); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
					return fmt.Errorf("route %s table %d: delete: %w", rt.Dst, rt.Table, err)
				}
				return nil
			})
		}
		if len(failed) == len(pending) {
			return firstErr
		}
		pending = failed
	}
	return nil
}

func (r *restorer) rules() error {
	for _, ru := range r.st.Rules {
		nr := netlink.NewRule()
		nr.Family, nr.Priority, nr.Table, nr.Type = ru.Family, ru.Priority, ru.Table, uint8(ru.Type)
		nr.Mark, nr.Mask, nr.Tos, nr.IifName, nr.OifName = ru.Mark, ru.Mask, uint(ru.Tos), ru.IifName, ru.OifName
		nr.Invert, nr.SuppressPrefixlen, nr.IPProto = ru.Invert, ru.SuppressPrefixlen, ru.IPProto
		if ru.Goto > 0 {
			nr.Goto = ru.Goto
		}
		if ru.SuppressIfgroup != nil {
			nr.SuppressIfgroup = *ru.SuppressIfgroup
		}
		if ru.Sport != nil {
			nr.Sport = netlink.NewRulePortRange(ru.Sport.Start, ru.Sport.End)
		}
		if ru.Dport != nil {
			nr.Dport = netlink.NewRulePortRange(ru.Dport.Start, ru.Dport.End)
		}
		if ru.UIDRange != nil {
			nr.UIDRange = netlink.NewRuleUIDRange(ru.UIDRange.Start, ru.UIDRange.End)
		}
		nr.Protocol = uint8(ru.Protocol)
		if ru.Src != "" {
			nr.Src, _, _ = parsePrefix(ru.Src)
		}
		if ru.Dst != "" {
			nr.Dst, _, _ = parsePrefix(ru.Dst)
		}
		if err := r.h.RuleAdd(nr); err != nil {
			return fmt.Errorf("rule priority %d table %d: add: %w", ru.Priority, ru.Table, err)
		}
		r.u.Push(func() error {
			if err := r.h.RuleDel(nr); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("rule priority %d table %d: delete: %w", nr.Priority, nr.Table, err)
			}
			return nil
		})
	}
	return nil
}

// RemoveLinks deletes from ns every link of st except the loopback, each
// only if it is still at its recorded ifindex with its recorded name. The
// outside ends of veths go with their inside ends. Meant for tests and for
// tearing down a restored netns that is kept.
func RemoveLinks(ns netns.NsHandle, st *State) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netdev remove: netlink handle in netns: %w", err)
	}
	defer h.Close()
	var errs []error
	for _, l := range st.Links {
		if l.Kind == KindLoopback {
			continue
		}
		if err := deleteLink(h, l.Index, l.Name); err != nil {
			errs = append(errs, fmt.Errorf("netdev remove: %w", err))
		}
	}
	return errors.Join(errs...)
}

package netdev

import (
	"fmt"
	"net"
	"sort"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DumpOptions tune Dump.
type DumpOptions struct {
	// Outside is the netns where the peers of the container's veths that
	// are not in the container live (the host side). When it is not open
	// (netns.None()), the netns of the calling thread is used. A veth whose
	// peer is in neither netns makes Dump fail. The zero value (fd 0)
	// counts as not given, like netns.None().
	Outside netns.NsHandle
}

// Dump reads the network state of the netns ns: every link, address, route
// (all tables, both families), non-default rule and the sysctls listed in
// sysctl.go. It only reads; ns and the outside netns are left unchanged.
// The result passes Validate (Dump checks it) unless the netns holds a name
// Validate refuses. Unsupported link kinds are recorded with their kind;
// Restore refuses them.
func Dump(ns netns.NsHandle, opts *DumpOptions) (*State, error) {
	if !isOpen(ns) {
		return nil, fmt.Errorf("netdev dump: netns handle is not open")
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netdev dump: netlink handle in netns: %w", err)
	}
	defer h.Close()

	st := &State{Version: FormatVersion}
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("netdev dump: list links: %w", err)
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Index < links[j].Attrs().Index })

	var outside *outsideNs
	defer func() {
		if outside != nil {
			outside.close()
		}
	}()
	var names []string
	for _, nl := range links {
		a := nl.Attrs()
		l := Link{
			Index:    a.Index,
			Name:     a.Name,
			Kind:     nl.Type(),
			MTU:      a.MTU,
			TxQLen:   a.TxQLen,
			Up:       a.Flags&net.FlagUp != 0,
			Promisc:  a.RawFlags&unix.IFF_PROMISC != 0, // asked for by a user; a bridge port counts as promiscuous without it
			Allmulti: a.RawFlags&unix.IFF_ALLMULTI != 0,
			NoARP:    a.RawFlags&unix.IFF_NOARP != 0,
			Master:   a.MasterIndex,
		}
		if len(a.HardwareAddr) == 6 {
			l.MAC = a.HardwareAddr.String()
		}
		if a.Flags&net.FlagLoopback != 0 {
			l.Kind = KindLoopback
			l.MAC = ""
		}
		if l.Kind == KindVeth {
			p := &VethPeer{Index: a.ParentIndex, NetnsID: a.NetNsID}
			if a.ParentIndex == 0 {
				return nil, fmt.Errorf("netdev dump: link %s (veth): the kernel reports no peer", a.Name)
			}
			if a.NetNsID < 0 {
				p.Where = PeerSelf
				for _, o := range links {
					if o.Attrs().Index == a.ParentIndex {
						p.Name = o.Attrs().Name
					}
				}
				if p.Name == "" {
					return nil, fmt.Errorf("netdev dump: link %s (veth): peer ifindex %d not found in the netns", a.Name, a.ParentIndex)
				}
			} else {
				if outside == nil {
					var o netns.NsHandle = netns.None()
					if opts != nil {
						o = opts.Outside
					}
					if outside, err = openOutside(h, o); err != nil {
						return nil, fmt.Errorf("netdev dump: link %s (veth): %w", a.Name, err)
					}
				}
				if err := outside.describePeer(a, p); err != nil {
					return nil, fmt.Errorf("netdev dump: link %s (veth): %w", a.Name, err)
				}
			}
			l.Peer = p
		}
		st.Links = append(st.Links, l)
		names = append(names, a.Name)
	}

	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("netdev dump: list addresses: %w", err)
	}
	for _, a := range addrs {
		ad := Addr{Link: a.LinkIndex, CIDR: a.IPNet.String(), Label: a.Label, Scope: a.Scope,
			Flags: a.Flags & keptAddrFlags}
		if a.Peer != nil && !a.Peer.IP.Equal(a.IP) {
			ad.Peer = a.Peer.String()
		}
		if a.Broadcast != nil && a.IP.To4() != nil {
			ad.Broadcast = a.Broadcast.String()
		}
		if i := indexOf(st.Links, a.LinkIndex); i < 0 || ad.Label == names[i] || a.IP.To4() == nil {
			ad.Label = ""
		}
		st.Addrs = append(st.Addrs, ad)
	}

	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("netdev dump: list routes: %w", err)
	}
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL || r.Protocol == unix.RTPROT_RA || r.Flags&unix.RTM_F_CLONED != 0 {
			continue
		}
		if r.Encap != nil || r.Via != nil || r.NewDst != nil || r.MPLSDst != nil {
			return nil, fmt.Errorf("netdev dump: route %v table %d: encapsulation, via or MPLS routes are not supported", r.Dst, r.Table)
		}
		st.Routes = append(st.Routes, routeFromNetlink(r))
	}

	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := h.RuleList(fam)
		if err != nil {
			return nil, fmt.Errorf("netdev dump: list rules: %w", err)
		}
		for _, r := range rules {
			if isDefaultRule(r) {
				continue
			}
			if r.TunID > 0 || r.Flow > 0 {
				return nil, fmt.Errorf("netdev dump: rule priority %d table %d: tunnel id or realm selectors are not supported", r.Priority, r.Table)
			}
			st.Rules = append(st.Rules, ruleFromNetlink(r, fam))
		}
	}

	if st.Sysctls, err = readSysctls(ns, sysctlKeys(names)); err != nil {
		return nil, fmt.Errorf("netdev dump: %w", err)
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("netdev dump: the dumped state does not validate: %w", err)
	}
	return st, nil
}

func indexOf(links []Link, ifindex int) int {
	for i := range links {
		if links[i].Index == ifindex {
			return i
		}
	}
	return -1
}

// keptAddrFlags are the IFA_F_* flags that are configuration; the others
// (tentative, dadfailed, deprecated, optimistic, temporary...) are states.
const keptAddrFlags = unix.IFA_F_NODAD | unix.IFA_F_HOMEADDRESS | unix.IFA_F_MANAGETEMPADDR |
	unix.IFA_F_NOPREFIXROUTE | unix.IFA_F_MCAUTOJOIN | unix.IFA_F_PERMANENT

func routeFromNetlink(r netlink.Route) Route {
	out := Route{
		Family: r.Family, Table: r.Table, Type: r.Type, Link: r.LinkIndex, Metric: r.Priority,
		Scope: int(r.Scope), Protocol: int(r.Protocol), Tos: r.Tos, OnLink: r.Flags&unix.RTNH_F_ONLINK != 0,
		MTU: r.MTU, AdvMSS: r.AdvMSS,
	}
	if r.Dst != nil {
		out.Dst = r.Dst.String()
	} else if r.Family == unix.AF_INET6 {
		out.Dst = "::/0"
	} else {
		out.Dst = "0.0.0.0/0"
	}
	if r.Src != nil {
		out.Src = r.Src.String()
	}
	if r.Gw != nil {
		out.Gw = r.Gw.String()
	}
	for _, nh := range r.MultiPath {
		n := Nexthop{Link: nh.LinkIndex, Weight: nh.Hops, OnLink: nh.Flags&unix.RTNH_F_ONLINK != 0}
		if nh.Gw != nil {
			n.Gw = nh.Gw.String()
		}
		out.Nexthops = append(out.Nexthops, n)
	}
	return out
}

// isDefaultRule tells the rules every new netns has: 0 lookup local,
// 32766 lookup main, 32767 lookup default, without selectors.
func isDefaultRule(r netlink.Rule) bool {
	if r.Src != nil || r.Dst != nil || r.Mark != 0 || r.IifName != "" || r.OifName != "" || r.Invert ||
		r.Tos != 0 || r.Goto > 0 || r.IPProto != 0 || r.Sport != nil || r.Dport != nil || r.UIDRange != nil ||
		r.TunID > 0 || r.Flow > 0 || r.Type > unix.FR_ACT_TO_TBL {
		return false
	}
	switch {
	case r.Table == unix.RT_TABLE_LOCAL && r.Priority <= 0:
		return true
	case r.Table == unix.RT_TABLE_MAIN && r.Priority == 32766:
		return true
	case r.Table == unix.RT_TABLE_DEFAULT && r.Priority == 32767:
		return true
	}
	return false
}

func ruleFromNetlink(r netlink.Rule, fam int) Rule {
	out := Rule{Family: fam, Priority: r.Priority, Table: r.Table, Type: int(r.Type), Mark: r.Mark, Mask: r.Mask,
		Tos: int(r.Tos), IifName: r.IifName, OifName: r.OifName, Invert: r.Invert,
		SuppressPrefixlen: r.SuppressPrefixlen, IPProto: r.IPProto}
	if out.Priority < 0 {
		out.Priority = 0
	}
	if r.Goto > 0 {
		out.Goto = r.Goto
	}
	if r.Src != nil {
		out.Src = r.Src.String()
	}
	if r.Dst != nil {
		out.Dst = r.Dst.String()
	}
	if out.SuppressPrefixlen < -1 {
		out.SuppressPrefixlen = -1
	}
	if r.SuppressIfgroup >= 0 {
		g := r.SuppressIfgroup
		out.SuppressIfgroup = &g
	}
	if r.Sport != nil {
		out.Sport = &PortRange{Start: r.Sport.Start, End: r.Sport.End}
	}
	if r.Dport != nil {
		out.Dport = &PortRange{Start: r.Dport.Start, End: r.Dport.End}
	}
	if r.UIDRange != nil {
		out.UIDRange = &UIDRange{Start: r.UIDRange.Start, End: r.UIDRange.End}
	}
	out.Protocol = int(r.Protocol)
	return out
}

// outsideNs is the netns holding the outside ends of the veths.
type outsideNs struct {
	h     *netlink.Handle
	nsid  int // its id as seen from the dumped netns
	owned netns.NsHandle
}

func openOutside(inside *netlink.Handle, o netns.NsHandle) (*outsideNs, error) {
	var owned netns.NsHandle = netns.None()
	if !isOpen(o) {
		cur, err := netns.Get()
		if err != nil {
			return nil, fmt.Errorf("open the calling thread's netns: %w", err)
		}
		o, owned = cur, cur
	}
	nsid, err := inside.GetNetNsIdByFd(int(o))
	if err != nil {
		owned.Close()
		return nil, fmt.Errorf("netns id of the outside netns: %w", err)
	}
	h, err := netlink.NewHandleAt(o)
	if err != nil {
		owned.Close()
		return nil, fmt.Errorf("netlink handle in the outside netns: %w", err)
	}
	return &outsideNs{h: h, nsid: nsid, owned: owned}, nil
}

func (o *outsideNs) close() {
	o.h.Close()
	if isOpen(o.owned) {
		o.owned.Close()
	}
}

// describePeer fills p from the outside netns after checking that the peer
// found there at the recorded ifindex is our veth's other end.
func (o *outsideNs) describePeer(a *netlink.LinkAttrs, p *VethPeer) error {
	if a.NetNsID != o.nsid || o.nsid < 0 {
		outside := fmt.Sprintf("id %d", o.nsid)
		if o.nsid < 0 {
			outside = "no id here, so no link of ours points to it"
		}
		return fmt.Errorf("peer ifindex %d lives in netns id %d, which is not the outside netns (%s): not supported",
			a.ParentIndex, a.NetNsID, outside)
	}
	pl, err := o.h.LinkByIndex(a.ParentIndex)
	if err != nil {
		return fmt.Errorf("peer ifindex %d in the outside netns: %w", a.ParentIndex, err)
	}
	pa := pl.Attrs()
	if pl.Type() != KindVeth || pa.ParentIndex != a.Index {
		return fmt.Errorf("outside link %s (ifindex %d) is not the veth peer of ifindex %d", pa.Name, pa.Index, a.Index)
	}
	p.Where, p.Name, p.MTU, p.TxQLen, p.Up = PeerOutside, pa.Name, pa.MTU, pa.TxQLen, pa.Flags&net.FlagUp != 0
	if len(pa.HardwareAddr) == 6 {
		p.MAC = pa.HardwareAddr.String()
	}
	if pa.MasterIndex != 0 {
		m, err := o.h.LinkByIndex(pa.MasterIndex)
		if err != nil {
			return fmt.Errorf("master ifindex %d of the outside peer %s: %w", pa.MasterIndex, pa.Name, err)
		}
		p.Master = m.Attrs().Name
	}
	return nil
}

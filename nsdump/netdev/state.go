// Package netdev captures and restores the network devices of a network
// namespace: every link with its ifindex, name, MAC, MTU and flags (veth
// pairs with their peer, wherever the peer lives), IPv4/IPv6 addresses,
// routes of every table, policy rules and the per-netns sysctls under
// /proc/sys/net.
//
// The saved form is State, plain JSON-tagged structs. State.Validate rejects
// damaged or hostile data before Restore touches anything.
//
// What is left out of a dump, on purpose (the kernel makes it again):
//   - routes of protocol "kernel" (the prefix routes made for an address, the
//     local/broadcast routes of table local, fe80::/64 and ff00::/8), cloned
//     and cached routes, and IPv6 routes learnt from router advertisements
//     (protocol "ra": they expire and are learnt again);
//   - the default policy rules (0 local, 32766 main, 32767 default).
//
// Addresses are all kept, IPv6 link-local ones included: a restored link has
// its dumped MAC, so the kernel would make the same EUI-64 link-local address
// again, but a link-local address that was set by hand (or generated another
// way) would be lost; Restore adds every address with "replace" semantics so
// the kernel's own copy is no conflict.
package netdev

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
)

// FormatVersion is the version of the State layout written by Dump.
const FormatVersion = 1

// Link kinds Dump records. Restore can create the kinds in restorable; any
// other kind is recorded (so that the image says what the container had) and
// refused by Restore.
const (
	KindLoopback = "loopback"
	KindVeth     = "veth"
	KindDummy    = "dummy"
	KindBridge   = "bridge"
	KindIfb      = "ifb"
)

var restorable = map[string]bool{KindLoopback: true, KindVeth: true, KindDummy: true, KindBridge: true, KindIfb: true}

// Where a veth peer lives (VethPeer.Where).
const (
	// PeerSelf: the peer is in the same netns (it has its own entry in
	// State.Links).
	PeerSelf = "self"
	// PeerOutside: the peer is in the "outside" netns given to Dump and
	// Restore (the host, for a container: the host side of its veth).
	PeerOutside = "outside"
)

// ErrIndexTaken is returned (wrapped) by Restore when an ifindex or name a
// link needs is already used in the target netns.
var ErrIndexTaken = errors.New("ifindex or name already in use")

// State is the saved network state of one netns.
type State struct {
	Version int     `json:"version"`
	Links   []Link  `json:"links"`
	Addrs   []Addr  `json:"addrs,omitempty"`
	Routes  []Route `json:"routes,omitempty"`
	Rules   []Rule  `json:"rules,omitempty"`
	// Sysctls maps a path relative to /proc/sys/net (e.g. "ipv4/ip_forward",
	// "ipv4/conf/eth0/forwarding") to its value as read, without the
	// trailing newline. Only the keys listed by sysctlKeys are dumped or
	// accepted.
	Sysctls map[string]string `json:"sysctls,omitempty"`
}

// Link is one network device of the netns.
type Link struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	// MAC is the hardware address (net.HardwareAddr.String form); empty
	// when the device has none.
	MAC      string `json:"mac,omitempty"`
	MTU      int    `json:"mtu"`
	TxQLen   int    `json:"txqlen"`
	Up       bool   `json:"up"`
	Promisc  bool   `json:"promisc,omitempty"`
	Allmulti bool   `json:"allmulti,omitempty"`
	NoARP    bool   `json:"noarp,omitempty"`
	// Master is the ifindex of the bridge this link is a port of (in the
	// same netns), 0 for none.
	Master int `json:"master,omitempty"`
	// Peer is set for a veth.
	Peer *VethPeer `json:"peer,omitempty"`
}

// VethPeer is the other end of a veth.
type VethPeer struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	// Where is PeerSelf or PeerOutside.
	Where string `json:"where"`
	// NetnsID is the peer's netns id as seen from the dumped netns
	// (IFLA_LINK_NETNSID), -1 for PeerSelf. Informational only.
	NetnsID int `json:"netnsid"`
	// The fields below are recorded for a PeerOutside peer only (a
	// PeerSelf peer has its own Link).
	MAC    string `json:"mac,omitempty"`
	MTU    int    `json:"mtu,omitempty"`
	TxQLen int    `json:"txqlen,omitempty"`
	Up     bool   `json:"up,omitempty"`
	// Master is the name of the bridge the outside peer was a port of, in
	// the outside netns ("" for none).
	Master string `json:"master,omitempty"`
}

// Addr is one IPv4 or IPv6 address.
type Addr struct {
	Link int `json:"link"` // ifindex
	// CIDR is the address with its prefix length, e.g. "10.0.0.2/24".
	CIDR string `json:"cidr"`
	// Peer is the peer prefix of a point-to-point address ("" for none).
	Peer      string `json:"peer,omitempty"`
	Broadcast string `json:"broadcast,omitempty"`
	Label     string `json:"label,omitempty"`
	// Flags are the IFA_F_* flags that describe configuration (nodad,
	// noprefixroute, mngtmpaddr, ...); states such as tentative are dropped.
	Flags int `json:"flags,omitempty"`
	Scope int `json:"scope"`
}

// Route is one route of any table.
type Route struct {
	Family int `json:"family"` // unix.AF_INET or unix.AF_INET6
	Table  int `json:"table"`
	Type   int `json:"type"` // RTN_* (unicast, blackhole, unreachable, ...)
	// Dst is the destination prefix; "0.0.0.0/0" or "::/0" for default.
	Dst      string    `json:"dst"`
	Src      string    `json:"src,omitempty"`
	Gw       string    `json:"gw,omitempty"`
	Link     int       `json:"link,omitempty"` // output ifindex, 0 for none
	Metric   int       `json:"metric,omitempty"`
	Scope    int       `json:"scope"`
	Protocol int       `json:"protocol"`
	Tos      int       `json:"tos,omitempty"`
	OnLink   bool      `json:"onlink,omitempty"`
	MTU      int       `json:"mtu,omitempty"`
	AdvMSS   int       `json:"advmss,omitempty"`
	Nexthops []Nexthop `json:"nexthops,omitempty"` // multipath routes
}

// Nexthop is one path of a multipath route.
type Nexthop struct {
	Gw     string `json:"gw,omitempty"`
	Link   int    `json:"link"`
	Weight int    `json:"weight"` // rtnh_hops (weight-1)
	OnLink bool   `json:"onlink,omitempty"`
}

// Rule is one non-default policy routing rule.
type Rule struct {
	Family   int     `json:"family"`
	Priority int     `json:"priority"`
	Table    int     `json:"table"`
	Type     int     `json:"type,omitempty"` // FR_ACT_* (0 or 1: to table)
	Src      string  `json:"src,omitempty"`
	Dst      string  `json:"dst,omitempty"`
	Mark     uint32  `json:"mark,omitempty"`
	Mask     *uint32 `json:"mask,omitempty"`
	Tos      int     `json:"tos,omitempty"`
	IifName  string  `json:"iif,omitempty"`
	OifName  string  `json:"oif,omitempty"`
	Invert   bool    `json:"invert,omitempty"`
	Goto     int     `json:"goto,omitempty"` // 0 for none
	// SuppressPrefixlen is -1 when unset.
	SuppressPrefixlen int `json:"suppress_prefixlen"`
	// SuppressIfgroup is nil when unset.
	SuppressIfgroup *int       `json:"suppress_ifgroup,omitempty"`
	IPProto         int        `json:"ipproto,omitempty"`
	Sport           *PortRange `json:"sport,omitempty"`
	Dport           *PortRange `json:"dport,omitempty"`
	UIDRange        *UIDRange  `json:"uidrange,omitempty"`
	// Protocol is the rule's FRA_PROTOCOL (who made it), 0 when unknown.
	Protocol int `json:"protocol,omitempty"`
}

// PortRange is an inclusive port range of a rule selector.
type PortRange struct {
	Start uint16 `json:"start"`
	End   uint16 `json:"end"`
}

// UIDRange is an inclusive uid range of a rule selector.
type UIDRange struct {
	Start uint32 `json:"start"`
	End   uint32 `json:"end"`
}

// Limits that keep a hostile state from making Restore do unbounded work.
const (
	maxLinks   = 4096
	maxAddrs   = 16384
	maxRoutes  = 65536
	maxRules   = 4096
	maxSysctls = 65536
	maxMTU     = 1 << 20
)

// compiled on first use: package init runs on every ctr-cr start-up
var ifnameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9_.:@+-]{1,15}$`) })

func validIfname(s string) bool {
	return ifnameRE().MatchString(s) && s != "." && s != ".." && s != "all" && s != "default"
}

// Validate checks st for internal consistency and against hostile values:
// unique ifindexes and names, valid interface names, MACs, MTUs, prefixes,
// families, references from addresses, routes, masters and veth peers to
// recorded links, sysctl keys from the known set only. It does not look at
// the system.
func (st *State) Validate() error {
	if st == nil {
		return errors.New("netdev state: nil")
	}
	if st.Version != FormatVersion {
		return fmt.Errorf("netdev state: version %d, want %d", st.Version, FormatVersion)
	}
	if len(st.Links) > maxLinks || len(st.Addrs) > maxAddrs || len(st.Routes) > maxRoutes ||
		len(st.Rules) > maxRules || len(st.Sysctls) > maxSysctls {
		return errors.New("netdev state: too many entries")
	}
	byIndex := map[int]*Link{}
	names := map[string]bool{}
	loopbacks := 0
	for i := range st.Links {
		l := &st.Links[i]
		if err := l.validate(); err != nil {
			return err
		}
		if byIndex[l.Index] != nil {
			return fmt.Errorf("netdev state: link %s: ifindex %d used twice", l.Name, l.Index)
		}
		if names[l.Name] {
			return fmt.Errorf("netdev state: link %s: name used twice", l.Name)
		}
		byIndex[l.Index], names[l.Name] = l, true
		if l.Kind == KindLoopback {
			loopbacks++
		}
	}
	if loopbacks > 1 {
		return errors.New("netdev state: more than one loopback link")
	}
	outsideNames := map[string]bool{}
	for i := range st.Links {
		l := &st.Links[i]
		if l.Master != 0 {
			m := byIndex[l.Master]
			if m == nil || m.Kind != KindBridge || m.Index == l.Index {
				return fmt.Errorf("netdev state: link %s: master %d is not a recorded bridge", l.Name, l.Master)
			}
		}
		if l.Peer == nil {
			continue
		}
		p := l.Peer
		switch p.Where {
		case PeerSelf:
			o := byIndex[p.Index]
			if o == nil || o.Kind != KindVeth || o.Name != p.Name || o.Index == l.Index || o.Peer == nil ||
				o.Peer.Where != PeerSelf || o.Peer.Index != l.Index {
				return fmt.Errorf("netdev state: link %s: veth peer %s (ifindex %d) is not a recorded veth pointing back", l.Name, p.Name, p.Index)
			}
		case PeerOutside:
			if outsideNames[p.Name] {
				return fmt.Errorf("netdev state: link %s: outside peer name %s used twice", l.Name, p.Name)
			}
			outsideNames[p.Name] = true
		}
	}
	for i, a := range st.Addrs {
		if err := a.validate(byIndex); err != nil {
			return fmt.Errorf("netdev state: address %d (%s): %w", i, a.CIDR, err)
		}
	}
	for i, r := range st.Routes {
		if err := r.validate(byIndex); err != nil {
			return fmt.Errorf("netdev state: route %d (%s table %d): %w", i, r.Dst, r.Table, err)
		}
	}
	for i, r := range st.Rules {
		if err := r.validate(); err != nil {
			return fmt.Errorf("netdev state: rule %d (priority %d): %w", i, r.Priority, err)
		}
	}
	for k, v := range st.Sysctls {
		if err := validSysctl(k, v, names); err != nil {
			return fmt.Errorf("netdev state: sysctl %q: %w", k, err)
		}
	}
	return nil
}

func (l *Link) validate() error {
	if l.Index < 1 || l.Index > 1<<31-1 {
		return fmt.Errorf("netdev state: link %q: ifindex %d out of range", l.Name, l.Index)
	}
	if !validIfname(l.Name) {
		return fmt.Errorf("netdev state: link ifindex %d: invalid name %q", l.Index, l.Name)
	}
	if !regexp.MustCompile(`^[a-z0-9_-]{1,32}$`).MatchString(l.Kind) {
		return fmt.Errorf("netdev state: link %s: invalid kind %q", l.Name, l.Kind)
	}
	if l.Kind == KindLoopback && l.Index != 1 {
		return fmt.Errorf("netdev state: link %s: loopback at ifindex %d, not 1", l.Name, l.Index)
	}
	if err := validMAC(l.MAC); err != nil {
		return fmt.Errorf("netdev state: link %s: %w", l.Name, err)
	}
	if l.MTU < 0 || l.MTU > maxMTU || l.TxQLen < 0 || l.TxQLen > 1<<24 {
		return fmt.Errorf("netdev state: link %s: mtu %d or txqlen %d out of range", l.Name, l.MTU, l.TxQLen)
	}
	if l.Master < 0 {
		return fmt.Errorf("netdev state: link %s: negative master", l.Name)
	}
	if (l.Kind == KindVeth) != (l.Peer != nil) {
		return fmt.Errorf("netdev state: link %s: a veth needs a peer and only a veth has one", l.Name)
	}
	if p := l.Peer; p != nil {
		if !validIfname(p.Name) {
			return fmt.Errorf("netdev state: link %s: invalid peer name %q", l.Name, p.Name)
		}
		if p.Index < 0 || p.Index > 1<<31-1 || (p.Where == PeerSelf && p.Index == 0) {
			return fmt.Errorf("netdev state: link %s: peer ifindex %d out of range", l.Name, p.Index)
		}
		switch p.Where {
		case PeerSelf, PeerOutside:
		default:
			return fmt.Errorf("netdev state: link %s: peer location %q is neither %q nor %q", l.Name, p.Where, PeerSelf, PeerOutside)
		}
		if err := validMAC(p.MAC); err != nil {
			return fmt.Errorf("netdev state: link %s: peer %s: %w", l.Name, p.Name, err)
		}
		if p.MTU < 0 || p.MTU > maxMTU || p.TxQLen < 0 || p.TxQLen > 1<<24 {
			return fmt.Errorf("netdev state: link %s: peer %s: mtu or txqlen out of range", l.Name, p.Name)
		}
		if p.Master != "" && !validIfname(p.Master) {
			return fmt.Errorf("netdev state: link %s: peer %s: invalid master name %q", l.Name, p.Name, p.Master)
		}
	}
	return nil
}

func validMAC(s string) error {
	if s == "" {
		return nil
	}
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("invalid MAC %q", s)
	}
	return nil
}

// parsePrefix parses "ip/len" and returns the address (not masked) and the
// network with the address's own IP (as netlink wants for addresses).
func parsePrefix(s string) (*net.IPNet, int, error) {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, 0, fmt.Errorf("invalid prefix %q", s)
	}
	fam := familyOf(ip)
	if fam == 4 {
		ip = ip.To4()
	}
	return &net.IPNet{IP: ip, Mask: n.Mask}, fam, nil
}

func familyOf(ip net.IP) int {
	if ip.To4() != nil {
		return 4
	}
	return 6
}

func parseIP(s string) (net.IP, int, error) {
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, 0, fmt.Errorf("invalid IP %q", s)
	}
	return ip, familyOf(ip), nil
}

func (a Addr) validate(links map[int]*Link) error {
	if links[a.Link] == nil {
		return fmt.Errorf("link ifindex %d not recorded", a.Link)
	}
	_, fam, err := parsePrefix(a.CIDR)
	if err != nil {
		return err
	}
	if a.Peer != "" {
		_, pf, err := parsePrefix(a.Peer)
		if err != nil || pf != fam {
			return fmt.Errorf("invalid peer %q", a.Peer)
		}
	}
	if a.Broadcast != "" {
		_, bf, err := parseIP(a.Broadcast)
		if err != nil || bf != 4 || fam != 4 {
			return fmt.Errorf("invalid broadcast %q", a.Broadcast)
		}
	}
	if a.Label != "" && (len(a.Label) > 15 || !strings.HasPrefix(a.Label, links[a.Link].Name) || !ifnameRE().MatchString(a.Label)) {
		return fmt.Errorf("invalid label %q", a.Label)
	}
	if a.Scope < 0 || a.Scope > 255 {
		return fmt.Errorf("scope %d out of range", a.Scope)
	}
	return nil
}

const (
	afInet  = 2
	afInet6 = 10
)

func famNum(f int) int {
	switch f {
	case afInet:
		return 4
	case afInet6:
		return 6
	}
	return 0
}

func (r Route) validate(links map[int]*Link) error {
	fam := famNum(r.Family)
	if fam == 0 {
		return fmt.Errorf("family %d is not AF_INET or AF_INET6", r.Family)
	}
	if r.Table < 1 || r.Table > 1<<32-1 || r.Type < 0 || r.Type > 255 || r.Scope < 0 || r.Scope > 255 ||
		r.Protocol < 0 || r.Protocol > 255 || r.Tos < 0 || r.Tos > 255 || r.Metric < 0 || r.Metric > 1<<32-1 ||
		r.MTU < 0 || r.MTU > maxMTU || r.AdvMSS < 0 || r.AdvMSS > maxMTU {
		return errors.New("a number is out of range")
	}
	_, df, err := parsePrefix(r.Dst)
	if err != nil {
		return err
	}
	if df != fam {
		return errors.New("destination family does not match")
	}
	for _, s := range []string{r.Src, r.Gw} {
		if s == "" {
			continue
		}
		if _, f, err := parseIP(s); err != nil || f != fam && !(s == r.Gw && fam == 4) {
			// IPv4 routes may have an IPv6 gateway (RTA_VIA) in the kernel,
			// but that is not restorable here.
			return fmt.Errorf("invalid or wrong-family address %q", s)
		} else if f != fam {
			return fmt.Errorf("gateway %q of another family is not supported", s)
		}
	}
	if r.Link != 0 && links[r.Link] == nil {
		return fmt.Errorf("link ifindex %d not recorded", r.Link)
	}
	if len(r.Nexthops) > 256 {
		return errors.New("too many nexthops")
	}
	for _, nh := range r.Nexthops {
		if links[nh.Link] == nil {
			return fmt.Errorf("nexthop link ifindex %d not recorded", nh.Link)
		}
		if nh.Weight < 0 || nh.Weight > 255 {
			return fmt.Errorf("nexthop weight %d out of range", nh.Weight)
		}
		if nh.Gw != "" {
			if _, f, err := parseIP(nh.Gw); err != nil || f != fam {
				return fmt.Errorf("invalid nexthop gateway %q", nh.Gw)
			}
		}
	}
	return nil
}

func (r Rule) validate() error {
	fam := famNum(r.Family)
	if fam == 0 {
		return fmt.Errorf("family %d is not AF_INET or AF_INET6", r.Family)
	}
	if r.Priority < 0 || r.Priority > 1<<32-1 || r.Table < 0 || r.Table > 1<<32-1 || r.Type < 0 || r.Type > 255 ||
		r.Tos < 0 || r.Tos > 255 || r.Goto < 0 || r.Goto > 1<<32-1 || r.SuppressPrefixlen < -1 || r.SuppressPrefixlen > 128 ||
		r.IPProto < 0 || r.IPProto > 255 || r.Protocol < 0 || r.Protocol > 255 ||
		r.SuppressIfgroup != nil && (*r.SuppressIfgroup < 0 || *r.SuppressIfgroup > 1<<31-1) {
		return errors.New("a number is out of range")
	}
	if r.Sport != nil && r.Sport.Start > r.Sport.End || r.Dport != nil && r.Dport.Start > r.Dport.End ||
		r.UIDRange != nil && r.UIDRange.Start > r.UIDRange.End {
		return errors.New("a range ends before it starts")
	}
	if r.Table == 0 && r.Goto == 0 && r.Type <= 1 {
		return errors.New("neither a table, a goto nor an action")
	}
	for _, s := range []string{r.Src, r.Dst} {
		if s == "" {
			continue
		}
		if _, f, err := parsePrefix(s); err != nil || f != fam {
			return fmt.Errorf("invalid or wrong-family prefix %q", s)
		}
	}
	for _, s := range []string{r.IifName, r.OifName} {
		if s != "" && !ifnameRE().MatchString(s) {
			return fmt.Errorf("invalid interface name %q", s)
		}
	}
	return nil
}

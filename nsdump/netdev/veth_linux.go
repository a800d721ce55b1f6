package netdev

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// vethEnd is one end of a veth pair to create. Index 0 lets the kernel
// choose; MTU and TxQLen 0 keep the kernel's defaults.
type vethEnd struct {
	Name   string
	Index  int
	MAC    net.HardwareAddr
	MTU    int
	TxQLen int
}

// createVeth creates a veth pair with one RTM_NEWLINK sent on a netlink
// socket bound in ns: end a in ns, end b in peerNs (or in ns when peerNs is
// not open). It is written with the library's message builder because
// netlink.LinkAdd cannot set the peer's ifindex (it always sends 0 in the
// VETH_INFO_PEER ifinfomsg). An ifindex or name already used in its netns
// makes the kernel refuse the whole pair (EEXIST): nothing is created then.
func createVeth(ns netns.NsHandle, a, b vethEnd, peerNs netns.NsHandle) error {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket in netns: %w", err)
	}
	defer s.Close()
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}

	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(a.Index)
	req.AddData(msg)
	for _, at := range endAttrs(a) {
		req.AddData(at)
	}
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated(KindVeth))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	peer := data.AddRtAttr(nl.VETH_INFO_PEER, nil)
	pmsg := nl.NewIfInfomsgChild(peer, unix.AF_UNSPEC)
	pmsg.Index = int32(b.Index)
	for _, at := range endAttrs(b) {
		peer.AddChild(at)
	}
	if isOpen(peerNs) {
		peer.AddRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(peerNs)))
	}
	req.AddData(info)
	_, err = req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

func endAttrs(e vethEnd) []*nl.RtAttr {
	at := []*nl.RtAttr{nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(e.Name))}
	if len(e.MAC) != 0 {
		at = append(at, nl.NewRtAttr(unix.IFLA_ADDRESS, []byte(e.MAC)))
	}
	if e.MTU > 0 {
		at = append(at, nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(e.MTU))))
	}
	if e.TxQLen > 0 {
		at = append(at, nl.NewRtAttr(unix.IFLA_TXQLEN, nl.Uint32Attr(uint32(e.TxQLen))))
	}
	return at
}

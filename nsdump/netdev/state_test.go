package netdev

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// sample is a valid state: lo, a veth with its peer outside (on a bridge),
// a veth pair inside with one end on an inside bridge, a dummy.
func sample() *State {
	return &State{
		Version: FormatVersion,
		Links: []Link{
			{Index: 1, Name: "lo", Kind: KindLoopback, MTU: 65536, Up: true},
			{Index: 42, Name: "eth0", Kind: KindVeth, MAC: "02:00:00:00:00:42", MTU: 1400, TxQLen: 1000, Up: true,
				Peer: &VethPeer{Index: 77, Name: "vethX", Where: PeerOutside, NetnsID: 0, MAC: "02:00:00:00:00:77", MTU: 1400, Up: true, Master: "br0"}},
			{Index: 50, Name: "dummy0", Kind: KindDummy, MTU: 9000},
			{Index: 60, Name: "vin0", Kind: KindVeth, Peer: &VethPeer{Index: 61, Name: "vin1", Where: PeerSelf, NetnsID: -1}},
			{Index: 61, Name: "vin1", Kind: KindVeth, Master: 70, Peer: &VethPeer{Index: 60, Name: "vin0", Where: PeerSelf, NetnsID: -1}},
			{Index: 70, Name: "brin", Kind: KindBridge},
		},
		Addrs: []Addr{
			{Link: 42, CIDR: "10.200.0.2/24", Broadcast: "10.200.0.255", Label: "eth0:1"},
			{Link: 42, CIDR: "fd00:200::2/64", Flags: 0x80},
		},
		Routes: []Route{
			{Family: afInet, Table: 254, Type: 1, Dst: "0.0.0.0/0", Gw: "10.200.0.1", Link: 42, Protocol: 3},
			{Family: afInet6, Table: 100, Type: 1, Dst: "fd00:99::/64", Gw: "fd00:200::1", Link: 42, Metric: 1024},
			{Family: afInet, Table: 254, Type: 1, Dst: "10.70.0.0/16", Nexthops: []Nexthop{{Gw: "10.200.0.1", Link: 42}, {Link: 50}}},
		},
		Rules: []Rule{{Family: afInet, Priority: 1000, Table: 100, Src: "10.200.0.2/32", SuppressPrefixlen: -1}},
		Sysctls: map[string]string{
			"ipv4/ip_forward":             "1",
			"ipv4/ip_local_port_range":    "32768\t60999",
			"ipv4/conf/eth0/rp_filter":    "2",
			"ipv6/conf/default/accept_ra": "0",
			"ipv4/conf/all/forwarding":    "1",
		},
	}
}

func TestValidate(t *testing.T) {
	if err := sample().Validate(); err != nil {
		t.Fatalf("sample: %v", err)
	}
	tests := []struct {
		name string
		edit func(*State)
		want string
	}{
		{"nil version", func(s *State) { s.Version = 0 }, "version"},
		{"index zero", func(s *State) { s.Links[2].Index = 0 }, "out of range"},
		{"index negative", func(s *State) { s.Links[2].Index = -5 }, "out of range"},
		{"index huge", func(s *State) { s.Links[2].Index = 1 << 40 }, "out of range"},
		{"index twice", func(s *State) { s.Links[2].Index = 42 }, "used twice"},
		{"name twice", func(s *State) { s.Links[2].Name = "eth0" }, "used twice"},
		{"name with slash", func(s *State) { s.Links[2].Name = "../x" }, "invalid name"},
		{"name too long", func(s *State) { s.Links[2].Name = strings.Repeat("a", 16) }, "invalid name"},
		{"name empty", func(s *State) { s.Links[2].Name = "" }, "invalid name"},
		{"name all", func(s *State) { s.Links[2].Name = "all" }, "invalid name"},
		{"name newline", func(s *State) { s.Links[2].Name = "a\nb" }, "invalid name"},
		{"kind odd", func(s *State) { s.Links[2].Kind = "Dummy; rm" }, "invalid kind"},
		{"loopback not 1", func(s *State) { s.Links[0].Index = 7 }, "loopback at ifindex 7"},
		{"two loopbacks", func(s *State) { s.Links[2].Kind = KindLoopback; s.Links[2].Index = 1; s.Links[0].Index = 1 }, ""},
		{"bad MAC", func(s *State) { s.Links[1].MAC = "zz:00" }, "invalid MAC"},
		{"long MAC", func(s *State) { s.Links[1].MAC = "00:11:22:33:44:55:66:77" }, "invalid MAC"},
		{"mtu negative", func(s *State) { s.Links[1].MTU = -1 }, "mtu"},
		{"mtu huge", func(s *State) { s.Links[1].MTU = 1 << 30 }, "mtu"},
		{"master missing", func(s *State) { s.Links[4].Master = 99 }, "not a recorded bridge"},
		{"master not bridge", func(s *State) { s.Links[4].Master = 50 }, "not a recorded bridge"},
		{"master self", func(s *State) { s.Links[5].Master = 70 }, "not a recorded bridge"},
		{"veth without peer", func(s *State) { s.Links[1].Peer = nil }, "needs a peer"},
		{"dummy with peer", func(s *State) { s.Links[2].Peer = &VethPeer{Index: 3, Name: "x", Where: PeerOutside} }, "needs a peer"},
		{"peer where odd", func(s *State) { s.Links[1].Peer.Where = "/proc/1/ns/net" }, "peer location"},
		{"peer name bad", func(s *State) { s.Links[1].Peer.Name = "a/b" }, "invalid peer name"},
		{"peer index negative", func(s *State) { s.Links[1].Peer.Index = -1 }, "peer ifindex"},
		{"peer master bad", func(s *State) { s.Links[1].Peer.Master = "x y" }, "invalid master"},
		{"self peer missing", func(s *State) { s.Links[3].Peer.Index = 99 }, "pointing back"},
		{"self peer not back", func(s *State) { s.Links[4].Peer.Index = 42; s.Links[4].Peer.Name = "eth0" }, "pointing back"},
		{"self peer is self", func(s *State) { s.Links[3].Peer.Index = 60; s.Links[3].Peer.Name = "vin0" }, "pointing back"},
		{"outside peer name twice", func(s *State) {
			s.Links[3].Peer = &VethPeer{Index: 0, Name: "vethX", Where: PeerOutside}
			s.Links[4].Peer = &VethPeer{Index: 0, Name: "vethY", Where: PeerOutside}
		}, "used twice"},
		{"addr unknown link", func(s *State) { s.Addrs[0].Link = 9 }, "not recorded"},
		{"addr bad cidr", func(s *State) { s.Addrs[0].CIDR = "10.0.0.300/24" }, "invalid prefix"},
		{"addr no prefix", func(s *State) { s.Addrs[0].CIDR = "10.0.0.3" }, "invalid prefix"},
		{"addr v4 prefix 33", func(s *State) { s.Addrs[0].CIDR = "10.0.0.3/33" }, "invalid prefix"},
		{"addr v6 broadcast", func(s *State) { s.Addrs[1].Broadcast = "10.0.0.255" }, "invalid broadcast"},
		{"addr label foreign", func(s *State) { s.Addrs[0].Label = "other:1" }, "invalid label"},
		{"addr scope", func(s *State) { s.Addrs[0].Scope = 300 }, "scope"},
		{"route family", func(s *State) { s.Routes[0].Family = 17 }, "family"},
		{"route dst family", func(s *State) { s.Routes[0].Dst = "::/0" }, "family"},
		{"route gw family", func(s *State) { s.Routes[1].Gw = "10.0.0.1" }, "address"},
		{"route gw bad", func(s *State) { s.Routes[0].Gw = "10.0.0" }, "address"},
		{"route link", func(s *State) { s.Routes[0].Link = 5 }, "not recorded"},
		{"route table 0", func(s *State) { s.Routes[0].Table = 0 }, "out of range"},
		{"route metric", func(s *State) { s.Routes[0].Metric = -1 }, "out of range"},
		{"nexthop link", func(s *State) { s.Routes[2].Nexthops[1].Link = 3 }, "not recorded"},
		{"nexthop weight", func(s *State) { s.Routes[2].Nexthops[1].Weight = 256 }, "weight"},
		{"nexthop gw family", func(s *State) { s.Routes[2].Nexthops[0].Gw = "fe80::1" }, "nexthop gateway"},
		{"rule family", func(s *State) { s.Rules[0].Family = 0 }, "family"},
		{"rule src family", func(s *State) { s.Rules[0].Src = "fd00::/8" }, "prefix"},
		{"rule no action", func(s *State) { s.Rules[0].Table = 0 }, "neither"},
		{"rule iif", func(s *State) { s.Rules[0].IifName = "a b" }, "interface name"},
		{"rule priority", func(s *State) { s.Rules[0].Priority = -3 }, "out of range"},
		{"rule sport", func(s *State) { s.Rules[0].Sport = &PortRange{Start: 9, End: 8} }, "range"},
		{"rule ifgroup", func(s *State) { g := -2; s.Rules[0].SuppressIfgroup = &g }, "out of range"},
		{"sysctl unknown", func(s *State) { s.Sysctls["kernel/core_pattern"] = "|/bin/sh" }, "not a known sysctl"},
		{"sysctl traversal", func(s *State) { s.Sysctls["ipv4/conf/../../../kernel/core_pattern"] = "1" }, ""},
		{"sysctl dev unknown", func(s *State) { s.Sysctls["ipv4/conf/wlan0/forwarding"] = "1" }, "not a recorded link"},
		{"sysctl key unknown", func(s *State) { s.Sysctls["ipv4/conf/eth0/bogus"] = "1" }, "not a known sysctl"},
		{"sysctl value", func(s *State) { s.Sysctls["ipv4/ip_forward"] = "1\n|x" }, "characters"},
		{"sysctl value long", func(s *State) { s.Sysctls["ipv4/ip_forward"] = strings.Repeat("1", 2000) }, "too long"},
		{"too many links", func(s *State) { s.Links = make([]Link, maxLinks+1) }, "too many"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := sample()
			tc.edit(s)
			err := s.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	if err := (*State)(nil).Validate(); err == nil {
		t.Fatal("nil state accepted")
	}
}

func TestJSONRoundTrip(t *testing.T) {
	b, err := json.Marshal(sample())
	if err != nil {
		t.Fatal(err)
	}
	var got State
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, sample()) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, *sample())
	}
	if err := got.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestSysctlOrder(t *testing.T) {
	got := sysctlOrder(sample().Sysctls)
	want := []string{"ipv4/conf/all/forwarding", "ipv4/ip_forward", "ipv4/ip_local_port_range",
		"ipv6/conf/default/accept_ra", "ipv4/conf/eth0/rp_filter"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("order %q, want %q", got, want)
	}
	// Every key Dump reads is one Validate accepts.
	links := map[string]bool{"eth0": true}
	for _, k := range sysctlKeys([]string{"eth0"}) {
		if err := validSysctl(k, "1", links); err != nil {
			t.Errorf("dumped key %s refused: %v", k, err)
		}
	}
}

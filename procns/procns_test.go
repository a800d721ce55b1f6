package procns

import (
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/nsdump"
	"github.com/ctr-cr/ctr-cr/nsdump/netdev"
)

// TestValidateKinds: namespaces.json must hold exactly the kinds the
// inventory lists, each valid; anything else is refused before use.
func TestValidateKinds(t *testing.T) {
	uts := &nsdump.UTS{Hostname: "h"}
	for _, c := range []struct {
		name  string
		st    State
		kinds []string
		want  string
	}{
		{"ok", State{Version: FormatVersion, UTS: uts}, []string{"uts"}, ""},
		{"version", State{Version: 9, UTS: uts}, []string{"uts"}, "version"},
		{"missing part", State{Version: FormatVersion}, []string{"uts"}, "missing"},
		{"unlisted part", State{Version: FormatVersion, UTS: uts, Cgroup: true}, []string{"uts"}, "does not list"},
		{"twice", State{Version: FormatVersion, UTS: uts}, []string{"uts", "uts"}, "twice"},
		{"unknown kind", State{Version: FormatVersion}, []string{"user"}, "not one ctr-cr restores"},
		{"bad hostname", State{Version: FormatVersion, UTS: &nsdump.UTS{Hostname: strings.Repeat("x", 65)}}, []string{"uts"}, "longer"},
	} {
		err := c.st.validate(c.kinds)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// TestCheckVeths: LXC's --external veth[IF]:HOST@BRIDGE renames the
// image's outside end; another bridge, an unknown interface or a bad name
// is refused.
func TestCheckVeths(t *testing.T) {
	mk := func() *State {
		return &State{Net: &netdev.State{Links: []netdev.Link{{Name: "eth0", Kind: "veth",
			Peer: &netdev.VethPeer{Name: "vethOLD", Where: netdev.PeerOutside, Master: "br0"}}}}}
	}
	st := mk()
	if err := st.CheckVeths([]string{"veth[eth0]:vethNEW@br0"}); err != nil || st.Net.Links[0].Peer.Name != "vethNEW" {
		t.Fatalf("rename: %v, peer %q", err, st.Net.Links[0].Peer.Name)
	}
	for arg, want := range map[string]string{
		"veth[eth0]:vethNEW@br1":            "another bridge",
		"veth[eth1]:vethNEW@br0":            "no veth eth1",
		"veth[eth0]:":                       "want veth",
		"veth[eth0]:averyveryverylongname0": "want veth",
	} {
		if err := mk().CheckVeths([]string{arg}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", arg, err, want)
		}
	}
	if err := (&State{}).CheckVeths([]string{"veth[eth0]:v@b"}); err == nil {
		t.Error("no network namespace: accepted")
	}
}

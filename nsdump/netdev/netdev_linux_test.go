package netdev

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var nsSeq atomic.Int32

// testNs is a named netns made for one test. Unlike testutil.NewNetns it
// can be deleted in the middle of the test (a "container" that goes away);
// whatever is left is deleted at cleanup. Every link the tests create lives
// in such namespaces: the host's interfaces are never touched.
type testNs struct {
	name string
	h    netns.NsHandle
}

func newTestNs(t *testing.T) *testNs {
	t.Helper()
	testutil.RequiresRoot(t)
	n := &testNs{name: fmt.Sprintf("ctrcr-nd-%d-%d", os.Getpid(), nsSeq.Add(1)), h: netns.None()}
	run(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() { n.del() })
	run(t, "ip", "-n", n.name, "link", "set", "lo", "up")
	h, err := netns.GetFromName(n.name)
	if err != nil {
		t.Fatalf("open netns %s: %v", n.name, err)
	}
	n.h = h
	return n
}

// del closes our handle and deletes the netns; its links go with it
// (asynchronously, in the kernel's cleanup_net).
func (n *testNs) del() {
	if n.h.IsOpen() {
		n.h.Close()
		n.h = netns.None()
	}
	if _, err := os.Stat("/run/netns/" + n.name); err == nil {
		exec.Command("ip", "netns", "del", n.name).Run()
	}
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (n *testNs) ip(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, append([]string{"ip", "-n", n.name}, args...)...)
}

func (n *testNs) links(t *testing.T) map[string]netlink.Link {
	t.Helper()
	h, err := netlink.NewHandleAt(n.h)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ls, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]netlink.Link{}
	for _, l := range ls {
		m[l.Attrs().Name] = l
	}
	return m
}

// waitGone waits until the link name has left the netns (veth ends go away
// asynchronously when the other end's netns is destroyed).
func (n *testNs) waitGone(t *testing.T, name string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if n.links(t)[name] == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, _ := exec.Command("sh", "-c", "lsns -t net; ls -l /proc/"+fmt.Sprint(os.Getpid())+"/task/*/ns/net /proc/"+fmt.Sprint(os.Getpid())+"/fd").CombinedOutput()
	t.Fatalf("link %s still in netns %s\n%s", name, n.name, out)
}

// buildContainer sets up, with iproute2 (independent of the code under
// test), the network of a "container" netns a whose veth eth0@42 has its
// peer vethX@77 in the "host" netns h, on bridge br0.
func buildContainer(t *testing.T, a, h *testNs) {
	h.ip(t, "link", "add", "br0", "type", "bridge")
	h.ip(t, "addr", "add", "10.200.0.1/24", "dev", "br0")
	h.ip(t, "addr", "add", "fd00:200::1/64", "dev", "br0", "nodad")
	h.ip(t, "link", "set", "br0", "up")

	a.ip(t, "link", "add", "eth0", "index", "42", "address", "02:00:00:00:00:42", "mtu", "1400", "type", "veth",
		"peer", "name", "vethX", "index", "77", "address", "02:00:00:00:00:77", "mtu", "1400", "netns", h.name)
	h.ip(t, "link", "set", "vethX", "master", "br0", "up")
	a.ip(t, "addr", "add", "10.200.0.2/24", "dev", "eth0")
	a.ip(t, "addr", "add", "fd00:200::2/64", "dev", "eth0", "nodad")
	a.ip(t, "link", "set", "eth0", "up")

	a.ip(t, "link", "add", "dummy0", "index", "50", "address", "02:00:00:00:00:50", "mtu", "9000", "txqlen", "500", "type", auxKind(t, h))
	a.ip(t, "addr", "add", "10.99.0.1/24", "dev", "dummy0")
	a.ip(t, "link", "set", "dummy0", "up", "promisc", "on")

	// a veth with both ends inside, one end on an inside bridge, one end down
	a.ip(t, "link", "add", "brin", "index", "70", "address", "02:00:00:00:00:70", "type", "bridge")
	a.ip(t, "link", "add", "vin0", "index", "60", "address", "02:00:00:00:00:60", "type", "veth",
		"peer", "name", "vin1", "index", "61", "address", "02:00:00:00:00:61")
	a.ip(t, "link", "set", "vin1", "master", "brin")
	a.ip(t, "link", "set", "brin", "up")
	a.ip(t, "link", "set", "vin1", "up")
	a.ip(t, "addr", "add", "192.168.77.1/24", "dev", "brin")

	a.ip(t, "route", "add", "default", "via", "10.200.0.1")
	a.ip(t, "route", "add", "10.50.0.0/16", "via", "10.200.0.1", "table", "100")
	a.ip(t, "route", "add", "10.60.0.0/16", "via", "10.99.0.254", "dev", "dummy0", "onlink", "metric", "30")
	a.ip(t, "route", "add", "blackhole", "10.66.0.0/16")
	a.ip(t, "-6", "route", "add", "fd00:99::/64", "via", "fd00:200::1")
	a.ip(t, "rule", "add", "from", "10.200.0.2", "table", "100", "priority", "1000")
	a.ip(t, "-6", "rule", "add", "to", "fd00:99::/64", "table", "main", "priority", "1001")
	a.ip(t, "rule", "add", "fwmark", "0x10/0xff", "ipproto", "tcp", "dport", "8000-8080", "uidrange", "1000-2000",
		"lookup", "100", "suppress_prefixlength", "0", "priority", "1002")
	run(t, "ip", "netns", "exec", a.name, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.eth0.rp_filter=2",
		"net.ipv6.conf.dummy0.accept_ra=0")
}

var auxKindOnce struct {
	done bool
	kind string
}

// auxKind is the kind of the extra device of the test container: dummy
// when the kernel has it (CONFIG_DUMMY), else ifb. Probed once in netns h.
func auxKind(t *testing.T, h *testNs) string {
	if !auxKindOnce.done {
		auxKindOnce.done, auxKindOnce.kind = true, KindDummy
		if err := exec.Command("ip", "-n", h.name, "link", "add", "probe0", "type", "dummy").Run(); err != nil {
			auxKindOnce.kind = KindIfb
		} else {
			h.ip(t, "link", "del", "probe0")
		}
		t.Logf("extra device kind: %s", auxKindOnce.kind)
	}
	return auxKindOnce.kind
}

// normalized returns a copy of st that compares equal across a
// dump/restore cycle: entries sorted, netns ids (numbering is per pair of
// netns) and the nodad flag Restore adds to IPv6 addresses dropped.
func normalized(st *State) State {
	c := *st
	c.Links = nil
	for _, l := range st.Links {
		if l.Peer != nil {
			p := *l.Peer
			p.NetnsID = 0
			l.Peer = &p
		}
		c.Links = append(c.Links, l)
	}
	c.Addrs = nil
	for _, a := range st.Addrs {
		if strings.Contains(a.CIDR, ":") {
			a.Flags &^= unix.IFA_F_NODAD
		}
		c.Addrs = append(c.Addrs, a)
	}
	sort.Slice(c.Addrs, func(i, j int) bool { return fmt.Sprint(c.Addrs[i]) < fmt.Sprint(c.Addrs[j]) })
	c.Routes = append([]Route(nil), st.Routes...)
	sort.Slice(c.Routes, func(i, j int) bool { return fmt.Sprint(c.Routes[i]) < fmt.Sprint(c.Routes[j]) })
	c.Rules = append([]Rule(nil), st.Rules...)
	sort.Slice(c.Rules, func(i, j int) bool { return fmt.Sprint(c.Rules[i]) < fmt.Sprint(c.Rules[j]) })
	return c
}

func findLink(st *State, name string) *Link {
	for i := range st.Links {
		if st.Links[i].Name == name {
			return &st.Links[i]
		}
	}
	return nil
}

func checkDump(t *testing.T, st *State) {
	t.Helper()
	eth0 := findLink(st, "eth0")
	if eth0 == nil || eth0.Index != 42 || eth0.Kind != KindVeth || eth0.MAC != "02:00:00:00:00:42" || eth0.MTU != 1400 || !eth0.Up {
		t.Fatalf("eth0: %+v", eth0)
	}
	if p := eth0.Peer; p == nil || p.Where != PeerOutside || p.Name != "vethX" || p.Index != 77 || p.Master != "br0" ||
		p.MAC != "02:00:00:00:00:77" || !p.Up {
		t.Fatalf("eth0 peer: %+v", eth0.Peer)
	}
	d := findLink(st, "dummy0")
	if d == nil || d.Index != 50 || d.Kind != auxKind(t, nil) || d.MTU != 9000 || d.TxQLen != 500 || !d.Promisc {
		t.Fatalf("dummy0: %+v", d)
	}
	v1 := findLink(st, "vin1")
	if v1 == nil || v1.Master != 70 || v1.Peer == nil || v1.Peer.Where != PeerSelf || v1.Peer.Index != 60 || !v1.Up || v1.Promisc {
		t.Fatalf("vin1: %+v", v1)
	}
	if v0 := findLink(st, "vin0"); v0 == nil || v0.Up {
		t.Fatalf("vin0: %+v", v0)
	}
	if lo := findLink(st, "lo"); lo == nil || lo.Kind != KindLoopback || lo.Index != 1 || !lo.Up {
		t.Fatalf("lo: %+v", lo)
	}
	if st.Sysctls["ipv4/ip_forward"] != "1" || st.Sysctls["ipv4/conf/eth0/rp_filter"] != "2" || st.Sysctls["ipv6/conf/dummy0/accept_ra"] != "0" {
		t.Fatalf("sysctls: ip_forward %q rp_filter %q", st.Sysctls["ipv4/ip_forward"], st.Sysctls["ipv4/conf/eth0/rp_filter"])
	}
	want := map[string]bool{"10.200.0.2/24": false, "fd00:200::2/64": false, "10.99.0.1/24": false, "192.168.77.1/24": false}
	for _, a := range st.Addrs {
		if _, ok := want[a.CIDR]; ok {
			want[a.CIDR] = true
		}
	}
	for c, ok := range want {
		if !ok {
			t.Fatalf("address %s not dumped: %+v", c, st.Addrs)
		}
	}
	routes := map[string]Route{}
	for _, r := range st.Routes {
		routes[fmt.Sprintf("%s/%d", r.Dst, r.Table)] = r
		if r.Protocol == unix.RTPROT_KERNEL {
			t.Fatalf("kernel route dumped: %+v", r)
		}
	}
	if r, ok := routes["0.0.0.0/0/254"]; !ok || r.Gw != "10.200.0.1" || r.Link != 42 {
		t.Fatalf("default route: %+v (all: %+v)", r, st.Routes)
	}
	if r, ok := routes["10.50.0.0/16/100"]; !ok || r.Gw != "10.200.0.1" {
		t.Fatalf("table 100 route: %+v", r)
	}
	if r, ok := routes["10.60.0.0/16/254"]; !ok || !r.OnLink || r.Metric != 30 {
		t.Fatalf("onlink route: %+v", r)
	}
	if r, ok := routes["10.66.0.0/16/254"]; !ok || r.Type != unix.RTN_BLACKHOLE {
		t.Fatalf("blackhole route: %+v", r)
	}
	if r, ok := routes["fd00:99::/64/254"]; !ok || r.Gw != "fd00:200::1" {
		t.Fatalf("ipv6 route: %+v", r)
	}
	if len(st.Rules) != 3 {
		t.Fatalf("rules: %+v", st.Rules)
	}
}

// TestDumpRestore: dump a container netns, delete it, restore into a fresh
// one with the "host" netns as outside, twice in a row.
func TestDumpRestore(t *testing.T) {
	h := newTestNs(t)
	a := newTestNs(t)
	buildContainer(t, a, h)

	src := a
	var first State
	for cycle := 1; cycle <= 2; cycle++ {
		st, err := Dump(src.h, &DumpOptions{Outside: h.h})
		if err != nil {
			t.Fatalf("cycle %d: dump: %v", cycle, err)
		}
		checkDump(t, st)
		if cycle == 1 {
			first = normalized(st)
		} else if got := normalized(st); !reflect.DeepEqual(got, first) {
			t.Fatalf("cycle %d: the restored netns dumps differently:\n got %+v\nwant %+v", cycle, got, first)
		}
		// The container goes away; its veth and the host side with it.
		src.del()
		h.waitGone(t, "vethX")

		dst := newTestNs(t)
		if cycle == 2 {
			dst.ip(t, "link", "set", "lo", "down") // as "ip netns add" leaves it
		}
		var logs []string
		if err := Restore(dst.h, st, &RestoreOptions{Outside: h.h, Logf: func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }}); err != nil {
			t.Fatalf("cycle %d: restore: %v", cycle, err)
		}
		if len(logs) != 0 {
			t.Errorf("cycle %d: restore notes: %q", cycle, logs)
		}
		hl := h.links(t)
		vx, br := hl["vethX"], hl["br0"]
		if vx == nil || vx.Attrs().Index != 77 || vx.Attrs().MasterIndex != br.Attrs().Index || vx.Attrs().Flags&unix.IFF_UP == 0 ||
			vx.Attrs().HardwareAddr.String() != "02:00:00:00:00:77" || vx.Attrs().ParentIndex != 42 {
			t.Fatalf("cycle %d: host side after restore: %+v", cycle, vx)
		}
		dl := dst.links(t)
		for name, idx := range map[string]int{"lo": 1, "eth0": 42, "dummy0": 50, "vin0": 60, "vin1": 61, "brin": 70} {
			if dl[name] == nil || dl[name].Attrs().Index != idx {
				t.Fatalf("cycle %d: %s not at ifindex %d", cycle, name, idx)
			}
		}
		if out, err := exec.Command("ip", "netns", "exec", h.name, "busybox", "ping", "-c1", "-W2", "10.200.0.2").CombinedOutput(); err != nil {
			t.Fatalf("cycle %d: ping 10.200.0.2 from the host side: %v: %s", cycle, err, out)
		}
		if out, err := exec.Command("ip", "netns", "exec", dst.name, "busybox", "ping", "-c1", "-W2", "fd00:200::1").CombinedOutput(); err != nil {
			t.Fatalf("cycle %d: ping fd00:200::1 from the container: %v: %s", cycle, err, out)
		}
		out := dst.ip(t, "rule", "show")
		if !strings.Contains(out, "1000:\tfrom 10.200.0.2 lookup 100") ||
			!strings.Contains(out, "1002:\tfrom all fwmark 0x10/0xff uidrange 1000-2000 ipproto tcp dport 8000-8080 lookup 100 suppress_prefixlength 0") {
			t.Fatalf("cycle %d: rules: %s", cycle, out)
		}
		src = dst
	}
	// Last: the restored netns dumps like the original.
	st, err := Dump(src.h, &DumpOptions{Outside: h.h})
	if err != nil {
		t.Fatal(err)
	}
	if got := normalized(st); !reflect.DeepEqual(got, first) {
		t.Fatalf("the restored netns dumps differently:\n got %+v\nwant %+v", got, first)
	}
	if err := RemoveLinks(src.h, st); err != nil {
		t.Fatal(err)
	}
	if got := len(src.links(t)); got != 1 {
		t.Fatalf("RemoveLinks left %d links", got)
	}
	h.waitGone(t, "vethX")
}

func dumpedContainer(t *testing.T) (*State, *testNs) {
	h := newTestNs(t)
	a := newTestNs(t)
	buildContainer(t, a, h)
	st, err := Dump(a.h, &DumpOptions{Outside: h.h})
	if err != nil {
		t.Fatal(err)
	}
	a.del()
	h.waitGone(t, "vethX")
	return st, h
}

// checkEmpty: the target holds only what it had and the host side is gone.
func checkEmpty(t *testing.T, dst, h *testNs, want ...string) {
	t.Helper()
	dl := dst.links(t)
	var names []string
	for n := range dl {
		names = append(names, n)
	}
	sort.Strings(names)
	sort.Strings(want)
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("target netns links after a failed restore: %v, want %v", names, want)
	}
	if h.links(t)["vethX"] != nil {
		t.Fatalf("the host side vethX was left behind")
	}
	if out := dst.ip(t, "rule", "show"); strings.Contains(out, "lookup 100") {
		t.Fatalf("rule left behind: %s", out)
	}
}

func TestRestoreIndexTaken(t *testing.T) {
	st, h := dumpedContainer(t)
	dst := newTestNs(t)
	dst.ip(t, "link", "add", "taken", "index", "50", "type", "bridge")
	err := Restore(dst.h, st, &RestoreOptions{Outside: h.h})
	if !errors.Is(err, ErrIndexTaken) || !strings.Contains(err.Error(), "dummy0") || !strings.Contains(err.Error(), "ifindex 50") {
		t.Fatalf("restore with ifindex 50 taken: %v", err)
	}
	t.Log(err)
	checkEmpty(t, dst, h, "lo", "taken")
}

func TestRestorePeerNameTaken(t *testing.T) {
	st, h := dumpedContainer(t)
	h.ip(t, "link", "add", "vethX", "type", "bridge")
	dst := newTestNs(t)
	err := Restore(dst.h, st, &RestoreOptions{Outside: h.h})
	if !errors.Is(err, ErrIndexTaken) || !strings.Contains(err.Error(), "vethX") {
		t.Fatalf("restore with the peer name taken: %v", err)
	}
	if l := h.links(t)["vethX"]; l == nil || l.Type() != "bridge" {
		t.Fatalf("the host's own vethX was touched: %+v", l)
	}
	checkEmpty2(t, dst)
}

func checkEmpty2(t *testing.T, dst *testNs) {
	t.Helper()
	if n := len(dst.links(t)); n != 1 {
		t.Fatalf("target netns has %d links after a failed restore", n)
	}
}

// TestRestoreUndo: a failure late in Restore (a route that cannot be added)
// removes every link, the host side and the rules already added.
func TestRestoreUndo(t *testing.T) {
	st, h := dumpedContainer(t)
	st.Routes = append(st.Routes, Route{Family: unix.AF_INET, Table: 254, Type: unix.RTN_UNICAST, Dst: "10.77.0.0/16",
		Gw: "10.123.0.1", Protocol: unix.RTPROT_BOOT})
	st.Rules = append([]Rule{{Family: unix.AF_INET, Priority: 900, Table: 100, SuppressPrefixlen: -1}}, st.Rules...)
	dst := newTestNs(t)
	err := Restore(dst.h, st, &RestoreOptions{Outside: h.h})
	if err == nil || !strings.Contains(err.Error(), "route 10.77.0.0/16") {
		t.Fatalf("restore with an unreachable gateway: %v", err)
	}
	t.Log(err)
	checkEmpty(t, dst, h, "lo")
	if out := dst.ip(t, "route", "show", "table", "all"); strings.Contains(out, "10.200.0") || strings.Contains(out, "blackhole") {
		t.Fatalf("routes left behind: %s", out)
	}

	// Now a failure in the last step: a duplicate rule.
	st.Routes = st.Routes[:len(st.Routes)-1]
	st.Rules = append(st.Rules, st.Rules[0])
	dst2 := newTestNs(t)
	err = Restore(dst2.h, st, &RestoreOptions{Outside: h.h})
	if err == nil || !strings.Contains(err.Error(), "rule priority 900") {
		t.Fatalf("restore with a duplicate rule: %v", err)
	}
	t.Log(err)
	checkEmpty(t, dst2, h, "lo")
	if out := dst2.ip(t, "rule", "show"); strings.Contains(out, "900:") {
		t.Fatalf("rule left behind: %s", out)
	}
}

func TestRestoreNeedsOutside(t *testing.T) {
	st, _ := dumpedContainer(t)
	dst := newTestNs(t)
	if err := Restore(dst.h, st, nil); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("restore without an outside netns: %v", err)
	}
	checkEmpty2(t, dst)
}

// TestRestoreMissingBridge: the recorded bridge is not in the outside netns:
// the host side is created unattached and a note says so.
func TestRestoreMissingBridge(t *testing.T) {
	st, h := dumpedContainer(t)
	h.ip(t, "link", "del", "br0")
	h.ip(t, "link", "add", "other", "index", "77", "type", "bridge")
	dst := newTestNs(t)
	var logs []string
	if err := Restore(dst.h, st, &RestoreOptions{Outside: h.h, Logf: func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }}); err != nil {
		t.Fatal(err)
	}
	vx := h.links(t)["vethX"]
	if vx == nil || vx.Attrs().MasterIndex != 0 || vx.Attrs().Index == 77 {
		t.Fatalf("host side: %+v", vx)
	}
	if j := strings.Join(logs, "\n"); !strings.Contains(j, "bridge br0 not found") || !strings.Contains(j, "cannot keep ifindex 77") {
		t.Fatalf("notes: %q", logs)
	}
	if err := RemoveLinks(dst.h, st); err != nil {
		t.Fatal(err)
	}
}

// TestDumpPeerElsewhere: a veth whose peer is in a netns that is neither the
// dumped one nor the outside one is refused with a clear error.
func TestDumpPeerElsewhere(t *testing.T) {
	h := newTestNs(t)
	a := newTestNs(t)
	x := newTestNs(t)
	a.ip(t, "link", "add", "eth0", "type", "veth", "peer", "name", "vx", "netns", x.name)
	_, err := Dump(a.h, &DumpOptions{Outside: h.h})
	if err == nil || !strings.Contains(err.Error(), "link eth0 (veth)") || !strings.Contains(err.Error(), "not the outside netns") {
		t.Fatalf("dump with a peer in a third netns: %v", err)
	}
	t.Log(err)
}

// TestRestoreRefusesBeforeTouching needs no root: every refusal comes
// before the netns is used.
func TestRestoreRefusesBeforeTouching(t *testing.T) {
	s := sample()
	s.Links[2].Kind = "macvlan"
	if err := Restore(netns.None(), s, nil); err == nil || !strings.Contains(err.Error(), `link dummy0: kind "macvlan" cannot be restored`) {
		t.Fatalf("macvlan: %v", err)
	}
	s = sample()
	s.Links[2].Index = 42
	if err := Restore(netns.None(), s, nil); err == nil || !strings.Contains(err.Error(), "used twice") {
		t.Fatalf("invalid state: %v", err)
	}
	if err := Restore(netns.None(), sample(), nil); err == nil || !strings.Contains(err.Error(), "not open") {
		t.Fatalf("closed netns: %v", err)
	}
	if err := Restore(0, sample(), &RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "not open") {
		t.Fatalf("zero netns: %v", err)
	}
	if err := Restore(netns.NsHandle(1<<20), sample(), &RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "no outside netns") {
		t.Fatalf("zero outside: %v", err)
	}
}

// TestSetIndex: a link a runtime made at some index is renumbered in place
// (round trip through a scratch netns with IFLA_NEW_IFINDEX); its veth peer
// outside stays attached; a taken index is refused without change.
func TestSetIndex(t *testing.T) {
	h := newTestNs(t)
	c := newTestNs(t)
	c.ip(t, "link", "add", "eth0", "type", "veth", "peer", "name", "vethC", "netns", h.name)
	c.ip(t, "link", "add", "taken", "index", "500", "type", "bridge")
	if err := SetIndex(c.h, "eth0", 4242); err != nil {
		t.Fatal(err)
	}
	if l := c.links(t)["eth0"]; l == nil || l.Attrs().Index != 4242 {
		t.Fatalf("eth0 after SetIndex: %+v", l)
	}
	if p := h.links(t)["vethC"]; p == nil || p.Attrs().ParentIndex != 4242 {
		t.Fatalf("peer after SetIndex: %+v", p)
	}
	err := SetIndex(c.h, "eth0", 500)
	if !errors.Is(err, ErrIndexTaken) {
		t.Fatalf("SetIndex to a taken index: %v", err)
	}
	if l := c.links(t)["eth0"]; l == nil || l.Attrs().Index != 4242 {
		t.Fatalf("eth0 after a refused SetIndex: %+v", l)
	}
	// The renumbered link takes a normal configuration afterwards.
	c.ip(t, "addr", "add", "10.201.0.2/24", "dev", "eth0")
	c.ip(t, "link", "set", "eth0", "up")
}

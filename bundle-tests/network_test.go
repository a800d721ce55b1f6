package bundletests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/container"
	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// inNs runs argv in network namespace ns (a path) and returns its output.
func inNs(ns string, argv ...string) (string, error) {
	a := testutil.InNetns(ns, argv...)
	out, err := exec.Command(a[0], a[1:]...).CombinedOutput()
	return string(out), err
}

// checkpointIn is cycle's checkpoint (see bundle.checkpoint) run from the
// network namespace ns, where the host side of the container's veth lives,
// with extra arguments.
func (b *bundle) checkpointIn(ns string, cycle int, args ...string) {
	b.t.Helper()
	os.RemoveAll(filepath.Join(b.dir, "checkpoint"))
	argv := append(append([]string{testutil.BuildCtrCr(b.t), "checkpoint"}, args...), b.id)
	if out, err := inNs(ns, argv...); err != nil {
		b.t.Fatalf("cycle %d: checkpoint: %v\n%s", cycle, err, out)
	}
}

// restoreIn is cycle's `ctr-cr restore -d BUNDLE` run from the network
// namespace ns.
func (b *bundle) restoreIn(ns string, cycle int) {
	b.t.Helper()
	if out, err := inNs(ns, testutil.BuildCtrCr(b.t), "restore", "-d", b.dir); err != nil {
		b.t.Fatalf("cycle %d: restore: %v\n%s", cycle, err, out)
	}
}

// linkOf returns "index mac" of a link inside the netns of pid.
func linkOf(t *testing.T, pid int, name string) string {
	t.Helper()
	// stdout only: ip may warn on stderr (seen in CI: a line starting
	// "Error" before the link), which is not part of the link's line.
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", "ip", "-o", "link", "show", name)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ip link show %s in pid %d: %v\n%s%s", name, pid, err, out, stderr.String())
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		t.Fatalf("ip link show %s in pid %d printed nothing (stderr: %s)", name, pid, stderr.String())
	}
	mac := ""
	for i, w := range f {
		if w == "link/ether" && i+1 < len(f) {
			mac = f[i+1]
		}
	}
	return strings.TrimSuffix(f[0], ":") + " " + mac
}

// TestRestore_Veth: a container with a veth whose other end lives outside
// (in a netns of the test standing for the host, as a port of a bridge
// holding the gateway address) keeps its interface's
// ifindex, MAC and address across two checkpoint/restore cycles, and
// answers ping from the outside after each restore (the outside end is
// rebuilt and put back on its bridge). ctr-cr runs in the
// outside netns, where the host side of the veth is found and rebuilt.
func TestRestore_Veth(t *testing.T) { forRuntimes(t, testRestoreVeth) }

func testRestoreVeth(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	outside := testutil.NewNetns(t)
	b.start()
	b.waitCount(1)
	pid := b.pidOf()
	vethSetup(t, outside, pid)
	pingFrom(t, outside, "before")
	want := linkOf(t, pid, "eth0")
	for cycle := 0; cycle < 2; cycle++ {
		b.checkpointIn(outside, cycle)
		b.restoreIn(outside, cycle)
		pid = b.pidOf()
		if got := linkOf(t, pid, "eth0"); got != want {
			t.Errorf("cycle %d: eth0 is %q, was %q (index mac)", cycle, got, want)
		}
		pingFrom(t, outside, fmt.Sprintf("cycle %d", cycle))
		b.waitCount(b.count())
	}
}

// pingFrom waits (up to 10 s) until the container's 10.251.0.2 answers a
// ping from netns outside; when names the moment for the failure.
func pingFrom(t *testing.T, outside, when string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := inNs(outside, "busybox", "ping", "-c", "1", "-W", "1", "10.251.0.2")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: ping 10.251.0.2 from outside: %v\n%s", when, err, out)
		}
	}
}

// vethSetup gives the container whose init is pid an eth0 (10.251.0.2/24)
// whose other end is a port of bridge br-ctrcr (10.251.0.1/24) in the
// netns outside.
func vethSetup(t *testing.T, outside string, pid int) {
	t.Helper()
	// the host side: a bridge with the gateway address, the veth's outside
	// end its port (as a container network usually has it)
	setup := [][]string{
		{"ip", "link", "add", "br-ctrcr", "type", "bridge"},
		{"ip", "addr", "add", "10.251.0.1/24", "dev", "br-ctrcr"},
		{"ip", "link", "set", "br-ctrcr", "up"},
		{"ip", "link", "add", "vh-ctrcr", "type", "veth", "peer", "name", "eth0"},
		{"ip", "link", "set", "vh-ctrcr", "master", "br-ctrcr", "up"},
		{"ip", "link", "set", "eth0", "netns", strconv.Itoa(pid)},
	}
	for _, c := range setup {
		if out, err := inNs(outside, c...); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	for _, c := range [][]string{{"ip", "addr", "add", "10.251.0.2/24", "dev", "eth0"}, {"ip", "link", "set", "eth0", "up"}, {"ip", "link", "set", "lo", "up"}} {
		if out, err := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(pid), "-n"}, c...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
}

// echoClient keeps one TCP connection to the container's echo server:
// numbered lines out, each echoed back and checked; progress (lines) or
// "ERROR ..." in DIR/progress.
const echoClient = `
import os, socket, sys, time
d = sys.argv[1]
def report(s):
    open(d + "/progress.tmp", "w").write(s)
    os.rename(d + "/progress.tmp", d + "/progress")
try:
    for attempt in range(100):
        try:
            s = socket.create_connection(("10.251.0.2", 7777), timeout=2)
            break
        except OSError:
            if attempt == 99:
                raise
            time.sleep(0.1)
    s.settimeout(30)
    f = s.makefile("rwb")
    i = 0
    while True:
        f.write(b"line %d\n" % i); f.flush()
        got = f.readline()
        if got != b"line %d\n" % i:
            raise RuntimeError("echo %r for line %d" % (got, i))
        i += 1
        report("lines %d" % i)
        time.sleep(0.02)
except Exception as e:
    report("ERROR %r" % e)
`

// TestRestore_TCPEstablished: a TCP connection from outside (a python
// client in the netns standing for the host) to an echo server in the
// container survives two checkpoint/restore cycles with --tcp-established:
// the same connection keeps echoing every line.
func TestRestore_TCPEstablished(t *testing.T) { forRuntimes(t, testRestoreTCPEstablished) }

func testRestoreTCPEstablished(t *testing.T, rt string) {
	b := newBundle(t, rt, "nc -l -p 7777 -e cat")
	outside := testutil.NewNetns(t)
	b.start()
	pid := b.pidOf()
	vethSetup(t, outside, pid)
	dir := t.TempDir()
	a := testutil.InNetns(outside, "python3", "-c", echoClient, dir)
	client := exec.Command(a[0], a[1:]...)
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Process.Kill(); client.Wait() })
	lines := func() int {
		p, _ := os.ReadFile(filepath.Join(dir, "progress"))
		if strings.HasPrefix(string(p), "ERROR") {
			t.Fatalf("echo client: %s", p)
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(string(p), "lines "))
		return n
	}
	deadline := time.Now().Add(15 * time.Second)
	for lines() < 5 {
		if time.Now().After(deadline) {
			p, _ := os.ReadFile(filepath.Join(dir, "progress"))
			t.Fatalf("echo client does not get going: %q", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for cycle := 0; cycle < 2; cycle++ {
		before := lines()
		b.checkpointIn(outside, cycle, "--tcp-established")
		time.Sleep(200 * time.Millisecond) // the client waits on a silent connection
		b.restoreIn(outside, cycle)
		deadline := time.Now().Add(20 * time.Second)
		for lines() < before+20 {
			if time.Now().After(deadline) {
				t.Fatalf("cycle %d: the connection does not carry lines any more (%d, was %d)", cycle, lines(), before)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("cycle %d: %d lines before the checkpoint, %d now", cycle, before, lines())
	}
	if out, _ := inNs(outside, "nft", "list", "tables"); strings.Contains(out, "ctrcr_lock") {
		t.Errorf("lock tables left:\n%s", out)
	}
}

// TestRestore_VethByHook: with the bundle's annotation
// org.ctr-cr.network.outside-peers=hook, ctr-cr rebuilds the container's
// veth (same ifindex and MAC inside) but leaves its host side down and off
// the bridge, for the bundle's createRuntime hook to wire: the hook sees it
// so, attaches it, and the container answers ping again, twice.
func TestRestore_VethByHook(t *testing.T) { forRuntimes(t, testRestoreVethByHook) }

func testRestoreVethByHook(t *testing.T, rt string) {
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatalf("ip (iproute2) is needed: %v", err)
	}
	b := newBundle(t, rt, counterScript)
	outside := testutil.NewNetns(t)
	b.start()
	b.waitCount(1)
	pid := b.pidOf()
	vethSetup(t, outside, pid)
	seen := filepath.Join(t.TempDir(), "peer-before-hook")
	b.editSpec(func(s *specs.Spec) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[container.OutsidePeersAnnotation] = "hook"
		s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c",
			ip + " -o link show vh-ctrcr > " + seen + " && " + ip + " link set vh-ctrcr master br-ctrcr up"}}}}
	})
	want := linkOf(t, pid, "eth0")
	bin := testutil.BuildCtrCr(t)
	for cycle := 0; cycle < 2; cycle++ {
		os.Remove(seen)
		b.checkpointIn(outside, cycle)
		b.restoreIn(outside, cycle)
		pid = b.pidOf()
		if got := linkOf(t, pid, "eth0"); got != want {
			t.Errorf("cycle %d: eth0 is %q, was %q (index mac)", cycle, got, want)
		}
		before, err := os.ReadFile(seen)
		if err != nil {
			t.Fatalf("cycle %d: the createRuntime hook did not run: %v", cycle, err)
		}
		if strings.Contains(string(before), "master") || strings.Contains(string(before), ",UP") {
			t.Errorf("cycle %d: ctr-cr wired the host side itself: %s", cycle, before)
		}
		pingFrom(t, outside, fmt.Sprintf("cycle %d, after the hook", cycle))
		b.waitCount(b.count())
	}
	// a value other than ctr-cr or hook is refused before anything is made
	b.checkpointIn(outside, 2)
	b.editSpec(func(s *specs.Spec) { s.Annotations[container.OutsidePeersAnnotation] = "nobody" })
	if out, err := inNs(outside, bin, "restore", "-d", b.dir); err == nil || !strings.Contains(out, container.OutsidePeersAnnotation) {
		t.Fatalf("restore with a bad annotation: %v\n%s", err, out)
	}
	if _, err := b.state(); err == nil {
		t.Errorf("a container %s exists after the refused restore", b.id)
	}
}

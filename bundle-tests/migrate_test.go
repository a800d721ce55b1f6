package bundletests

// `ctr-cr migrate CONTAINER_ID --to HOST:PORT` between two "hosts" of this
// machine: network namespaces hostA and hostB, each with a bridge
// br-ctrcr, joined by a veth (hl-a, hl-b: one L2 segment, as two hosts on
// one LAN), a client namespace on hostA's bridge. Each host has its own
// runtime state root and cgroup path for the container, and a copy of the
// bundle (config.json, rootfs): what a second machine would have.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// mustIn runs each command in network namespace ns, failing the test on
// the first error.
func mustIn(t *testing.T, ns string, cmds ...[]string) {
	t.Helper()
	for _, c := range cmds {
		if out, err := inNs(ns, c...); err != nil {
			t.Fatalf("%v in %s: %v\n%s", c, ns, err, out)
		}
	}
}

// twoHosts makes hostA's side as vethSetup does for the container whose
// init is pid (bridge 10.251.0.1, container 10.251.0.2), hostB with a
// bridge of the same name at 10.251.0.3 joined to hostA's by a veth, and
// a client namespace at 10.251.0.10 on hostA's bridge. It returns hostB
// and the client namespace.
func twoHosts(t *testing.T, hostA string, pid int) (string, string) {
	t.Helper()
	hostB, client := testutil.NewNetns(t), testutil.NewNetns(t)
	vethSetup(t, hostA, pid)
	// fixed bridge MACs: a bridge otherwise takes its lowest port's, and
	// the container's outside peer, rebuilt on hostB with its MAC while
	// the source's is still on hostA, could give both bridges one MAC
	mustIn(t, hostA, []string{"ip", "link", "set", "br-ctrcr", "address", "02:00:0a:fb:00:01"})
	mustIn(t, hostB,
		[]string{"ip", "link", "add", "br-ctrcr", "address", "02:00:0a:fb:00:03", "type", "bridge"},
		[]string{"ip", "addr", "add", "10.251.0.3/24", "dev", "br-ctrcr"},
		[]string{"ip", "link", "set", "br-ctrcr", "up"})
	mustIn(t, hostA,
		[]string{"ip", "link", "add", "hl-a", "type", "veth", "peer", "name", "hl-b"},
		[]string{"ip", "link", "set", "hl-b", "netns", filepath.Base(hostB)},
		[]string{"ip", "link", "set", "hl-a", "master", "br-ctrcr", "up"})
	mustIn(t, hostB, []string{"ip", "link", "set", "hl-b", "master", "br-ctrcr", "up"})
	mustIn(t, client,
		[]string{"ip", "link", "add", "c0", "type", "veth", "peer", "name", "vc-ctrcr"},
		[]string{"ip", "link", "set", "vc-ctrcr", "netns", filepath.Base(hostA)},
		[]string{"ip", "addr", "add", "10.251.0.10/24", "dev", "c0"},
		[]string{"ip", "link", "set", "c0", "up"})
	mustIn(t, hostA, []string{"ip", "link", "set", "vc-ctrcr", "master", "br-ctrcr", "up"})
	return hostB, client
}

// copyBundle makes the destination host's bundle: a copy of b's
// config.json, with edit applied, whose root is b's rootfs itself: the
// container's files are on storage both hosts see, as a migration needs
// (a copy of the rootfs taken before the migration lacks what the
// container wrote since, e.g. a file it holds open at the checkpoint).
func copyBundle(t *testing.T, b *bundle, edit func(*specs.Spec)) string {
	t.Helper()
	dst := t.TempDir()
	if out, err := exec.Command("cp", "-a", filepath.Join(b.dir, "config.json"), dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	rootfs, err := filepath.Abs(filepath.Join(b.dir, "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	c := &bundle{t: t, dir: dst}
	c.editSpec(func(s *specs.Spec) {
		s.Root.Path = rootfs
		if edit != nil {
			edit(s)
		}
	})
	return dst
}

// startMigrateReceiver starts `ctr-cr migrate-receive --wait` in netns ns
// with args and returns the address it listens on.
func startMigrateReceiver(t *testing.T, ns, addr string, args ...string) string {
	t.Helper()
	argv := testutil.InNetns(ns, append([]string{testutil.BuildCtrCr(t), "migrate-receive", "--address", addr, "--port", "0", "-D", t.TempDir(), "--wait"}, args...)...)
	return testutil.StartListening(t, argv...).Addr
}

// echoLines starts the echo client (network_test.go) in netns ns and
// returns its line count reader.
func echoLines(t *testing.T, ns string) func() int {
	t.Helper()
	dir := t.TempDir()
	a := testutil.InNetns(ns, "python3", "-c", echoClient, dir)
	client := exec.Command(a[0], a[1:]...)
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Process.Kill(); client.Wait() })
	return func() int {
		p, _ := os.ReadFile(filepath.Join(dir, "progress"))
		if strings.HasPrefix(string(p), "ERROR") {
			t.Fatalf("echo client: %s", p)
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(string(p), "lines "))
		return n
	}
}

// waitLines waits until lines() passes n.
func waitLines(t *testing.T, lines func() int, n int, when string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for lines() <= n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the connection does not carry lines (%d, want more than %d)", when, lines(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestore_Migrate: a busybox container with its own network namespace
// (its veth on hostA's bridge), an echo server holding a TCP connection
// from the client namespace and a script checking its memory, migrates
// with --tcp-established to a receiver on hostB: pre-dump rounds while it
// runs, the final checkpoint, the restore from hostB's bundle there (its
// veth now on hostB's bridge, same address and MAC). The source container
// is gone; on hostB the script's memory checks out and its count goes on,
// and the client's same connection goes on echoing lines.
func TestRestore_Migrate(t *testing.T) { forRuntimes(t, testRestoreMigrate) }

func testRestoreMigrate(t *testing.T, rt string) {
	b := newBundle(t, rt, "nc -l -p 7777 -e cat & "+memoryScript)
	b.editSpec(func(s *specs.Spec) { s.Linux.CgroupsPath = "/ctrcr-host-a/" + b.id })
	hostA := testutil.NewNetns(t)
	b.start()
	pid := b.pidOf()
	n := b.waitMemState(0, 2)
	hostB, client := twoHosts(t, hostA, pid)
	lines := echoLines(t, client)
	waitLines(t, lines, 5, "before")
	dstBundle := copyBundle(t, b, func(s *specs.Spec) { s.Linux.CgroupsPath = "/ctrcr-host-b/" + b.id })
	dstRoot := t.TempDir()
	t.Cleanup(func() { exec.Command(rt, "--root", dstRoot, "delete", "--force", b.id).Run() })
	addr := startMigrateReceiver(t, hostB, "10.251.0.3", "--bundle", dstBundle, "--root", dstRoot)
	before := lines()
	argv := testutil.InNetns(hostA, testutil.BuildCtrCr(t), "migrate", b.id, "--to", addr, "-D", t.TempDir(), "--tcp-established", "--print-stats")
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "restored container "+b.id) {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	st := statsLines(t, string(out))
	if len(st) < 2 || st[len(st)-1]["kind"] != "final" || num(st[len(st)-1], "stats.frozen_ms") == 0 {
		t.Fatalf("stats: want the pre-dump rounds and the final one: %v", st)
	}
	for _, s := range st {
		t.Logf("round %v (%v): %v pages written, %v dirty, %v from the parent, frozen %v ms", s["round"], s["kind"],
			num(s, "stats.pages_written")+num(s, "stats.dump.pages_written"), num(s, "stats.pages_dirty")+num(s, "stats.dump.pages_dirty"),
			num(s, "stats.pages_from_parent")+num(s, "stats.dump.pages_from_parent"), num(s, "stats.frozen_ms"))
	}
	if err := waitGone(pid, 5*time.Second); err != nil {
		t.Fatalf("source: %v", err)
	}
	if out, err := b.rt("state", b.id); err == nil {
		t.Fatalf("the source container is still there:\n%s", out)
	}
	dst := &bundle{t: t, runtime: rt, dir: dstBundle, id: b.id}
	sout, err := exec.Command(rt, "--root", dstRoot, "state", b.id).CombinedOutput()
	if err != nil || !strings.Contains(string(sout), `"running"`) {
		t.Fatalf("the destination container: %v\n%s", err, sout)
	}
	dpid := dst.pidFromState(sout)
	at, _ := b.memState(0) // the source's last count, in its rootfs
	if got := dst.waitMemState(dpid, at); got > at+50 && at > n {
		t.Errorf("count on the destination %d, was %d at the checkpoint", got, at)
	}
	dst.waitMemState(dpid, at+3)
	waitLines(t, lines, before+20, "after the migration")
	t.Logf("%d lines before the migration, %d now", before, lines())
}

// pidFromState reads the pid of a runtime's state output.
func (b *bundle) pidFromState(out []byte) int {
	b.t.Helper()
	i := strings.Index(string(out), `"pid": `)
	if i < 0 {
		b.t.Fatalf("no pid in state:\n%s", out)
	}
	f := strings.FieldsFunc(string(out[i+len(`"pid": `):]), func(r rune) bool { return r < '0' || r > '9' })
	pid, _ := strconv.Atoi(f[0])
	return pid
}

// TestCheckpoint_MigrateFails: when the destination cannot restore the
// container (its bundle there differs: another hostname), the migration
// fails with the destination's reason after the final checkpoint froze
// the container, and the container runs on here, thawed, as it was: same
// init, its memory checking out and its count going on.
func TestCheckpoint_MigrateFails(t *testing.T) { forRuntimes(t, testCheckpointMigrateFails) }

func testCheckpointMigrateFails(t *testing.T, rt string) {
	b := newBundle(t, rt, memoryScript)
	b.start()
	pid := b.pidOf()
	n := b.waitMemState(0, 2)
	dstBundle := copyBundle(t, b, func(s *specs.Spec) { s.Hostname = "elsewhere" })
	dstRoot := t.TempDir()
	t.Cleanup(func() { exec.Command(rt, "--root", dstRoot, "delete", "--force", b.id).Run() })
	host := testutil.NewNetns(t)
	addr := startMigrateReceiver(t, host, "127.0.0.1", "--bundle", dstBundle, "--root", dstRoot)
	argv := testutil.InNetns(host, testutil.BuildCtrCr(t), "migrate", b.id, "--to", addr, "-D", t.TempDir())
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "hostname") || !strings.Contains(string(out), "runs on here") {
		t.Fatalf("migrate to a destination that cannot restore: %v\n%s", err, out)
	}
	if b.pidOf() != pid {
		t.Fatal("the container's init changed")
	}
	st, err := b.state()
	if err != nil || st["status"] != "running" {
		t.Fatalf("container after the failed migration: %v %v", st, err)
	}
	b.waitMemState(0, n+3)
	if out, err := exec.Command(rt, "--root", dstRoot, "state", b.id).CombinedOutput(); err == nil {
		t.Errorf("a container is left on the destination:\n%s", out)
	}
}

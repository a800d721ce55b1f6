package platformtests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// podman runs podman with ctr-cr as its runtime (by the path of the runc
// symlink) and ctr-cr as the criu of its version probe first on the PATH.
// No systemd here: cgroupfs.
type podman struct {
	t       *testing.T
	runtime string
	path    string
	// netns, when set, is the network namespace podman runs in (its
	// bridge, veths and firewall rules are made there, not on the host's)
	netns string
}

func newPodman(t *testing.T) *podman {
	t.Helper()
	requireTools(t, "podman", "conmon", "busybox")
	rt, cr := runtimeDirs(t)
	return &podman{t: t, runtime: filepath.Join(rt, "runc"), path: cr + ":" + os.Getenv("PATH")}
}

// run runs podman with args and returns its combined output.
func (p *podman) run(args ...string) (string, error) {
	all := append([]string{"podman", "--cgroup-manager", "cgroupfs", "--runtime", p.runtime}, args...)
	all = testutil.InNetns(p.netns, all...)
	cmd := exec.Command(all[0], all[1:]...)
	cmd.Env = append(os.Environ(), "PATH="+p.path)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// must runs podman and fails the test on an error.
func (p *podman) must(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	if err != nil {
		p.t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

var (
	podImageOnce sync.Once
	podImage     string
	podImageErr  error
)

// image imports the busybox root file system as a local image once (removed
// when the tests end).
func (p *podman) image() string {
	p.t.Helper()
	podImageOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ctrcr-podimg-")
		if err != nil {
			podImageErr = err
			return
		}
		defer os.RemoveAll(dir)
		f, err := os.Create(filepath.Join(dir, "rootfs.tar"))
		if err != nil {
			podImageErr = err
			return
		}
		err = busyboxTar(f)
		f.Close()
		if err != nil {
			podImageErr = err
			return
		}
		name := "localhost/" + uniqueName("busybox") + ":test"
		if out, err := p.run("import", f.Name(), name); err != nil {
			podImageErr = err
			podImage = out
			return
		}
		podImage = name
		cleanups = append(cleanups, func() { exec.Command("podman", "rmi", "-f", name).Run() })
	})
	if podImageErr != nil {
		p.t.Fatalf("podman import: %v %s", podImageErr, podImage)
	}
	return podImage
}

// startCounter runs the counter (counterScript) in a new container; see
// startScript.
func (p *podman) startCounter(extra ...string) string {
	p.t.Helper()
	return p.startScript(counterScript, extra...)
}

// startScript runs sh -c script, which logs "n I" lines, in a new
// container (no network of the host's: --network none, unless extra names
// another) and waits for it to count; extra are more run options (-t,
// --network). The container is removed when the test ends.
func (p *podman) startScript(script string, extra ...string) string {
	p.t.Helper()
	img := p.image()
	name := uniqueName("pod")
	p.t.Cleanup(func() { p.run("rm", "-f", "-t", "0", name) })
	// root here lacks CAP_SYS_RESOURCE: runc cannot raise podman's
	// default rlimits
	args := []string{"run", "-d", "--name", name, "--tmpfs", "/data",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"}
	if !strings.Contains(strings.Join(extra, " "), "--network") {
		args = append(args, "--network", "none")
	}
	args = append(append(args, extra...), img, "sh", "-c", script)
	p.must(args...)
	p.waitCount(name, 3)
	return name
}

// logCounts reads the container's log as counts.
func (p *podman) logCounts(name string) []int {
	p.t.Helper()
	return counts(p.t, p.must("logs", name))
}

// waitCount waits until the counter's log reaches n.
func (p *podman) waitCount(name string, n int) {
	p.t.Helper()
	waitFor(p.t, "the counter to reach "+itoa(n), func() bool {
		out, err := p.run("logs", name)
		return err == nil && last(counts(p.t, out)) >= n
	})
}

// checkpoint checkpoints name with ctr-cr under podman, --print-stats
// included, checks the stats podman read from stats-dump, and returns the
// count the log had reached.
func (p *podman) checkpoint(name string, opts ...string) int {
	p.t.Helper()
	t0 := time.Now()
	out := p.must(append(append([]string{"container", "checkpoint", "--print-stats"}, opts...), name)...)
	p.t.Logf("podman container checkpoint %s: %v", strings.Join(opts, " "), time.Since(t0))
	var st struct {
		Stats []struct {
			Criu struct {
				Frozen  int64 `json:"frozen_time"`
				Written int64 `json:"pages_written"`
			} `json:"criu_statistics"`
		} `json:"container_statistics"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Stats) != 1 || st.Stats[0].Criu.Frozen <= 0 || st.Stats[0].Criu.Written <= 0 {
		p.t.Errorf("checkpoint --print-stats: %v\n%s", err, out)
	}
	return last(p.logCounts(name))
}

// restore restores name (opts: --import FILE ...) and checks that it runs
// under podman, counts on from where it was checkpointed, and that exec
// works in it.
func (p *podman) restore(name string, at int, opts ...string) {
	p.t.Helper()
	t0 := time.Now()
	target := []string{name}
	if len(opts) > 0 && opts[0] == "--import" {
		target = nil
	}
	out := p.must(append(append([]string{"container", "restore", "--print-stats"}, opts...), target...)...)
	p.t.Logf("podman container restore %s: %v", strings.Join(opts, " "), time.Since(t0))
	// what podman read from ctr-cr's stats-restore
	var st struct {
		Stats []struct {
			Criu struct {
				Restore int64 `json:"restore_time"`
				Pages   int64 `json:"pages_restored"`
			} `json:"criu_statistics"`
		} `json:"container_statistics"`
	}
	js := out
	if i := strings.Index(out, "{"); i >= 0 {
		js = out[i:]
	}
	if err := json.Unmarshal([]byte(js), &st); err != nil || len(st.Stats) != 1 || st.Stats[0].Criu.Restore <= 0 || st.Stats[0].Criu.Pages <= 0 {
		p.t.Errorf("restore --print-stats: %v\n%s", err, out)
	}
	if st := strings.TrimSpace(p.must("inspect", "--format", "{{.State.Status}}", name)); st != "running" {
		p.t.Fatalf("after restore the container is %q", st)
	}
	p.waitCount(name, at+3)
	// exec works in it (the counters check their tmpfs themselves)
	if out := strings.TrimSpace(p.must("exec", name, "cat", "/proc/1/comm")); out != "sh" {
		p.t.Errorf("exec cat /proc/1/comm: %q, want sh", out)
	}
}

func itoa(n int) string { return fmtInt(n) }

func fmtInt(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// A counter container under podman, checkpointed and restored twice in
// place with ctr-cr as the engine (--keep: the second checkpoint replaces
// the first's image): its log never restarts or skips, its
// tmpfs and memory agree from inside, exec works after each restore, and
// podman removes it at the end.
func TestReal_PodmanCounter(t *testing.T) {
	p := newPodman(t)
	name := p.startCounter()
	for round := 1; round <= 2; round++ {
		// round 1 keeps its image and logs (--keep): round 2 checkpoints
		// into that directory again
		at := p.checkpoint(name, "--keep")
		if st := strings.TrimSpace(p.must("inspect", "--format", "{{.State.Status}}", name)); st != "exited" {
			t.Fatalf("round %d: after checkpoint the container is %q, want exited", round, st)
		}
		p.restore(name, at, "--keep")
	}
	checkContinuous(t, p.logCounts(name))
	p.must("rm", "-f", "-t", "0", name)
}

// The same with a terminal (podman run -t: conmon's console socket).
func TestReal_PodmanTerminal(t *testing.T) {
	p := newPodman(t)
	name := p.startCounter("-t")
	for round := 1; round <= 2; round++ {
		at := p.checkpoint(name)
		p.restore(name, at)
	}
	checkContinuous(t, p.logCounts(name))
}

// checkpoint --export, remove the container, restore --import the archive
// (podman rebuilds the spec: mounts in another order), twice; then a copy
// restored beside the running original (--import --name).
func TestReal_PodmanExportImport(t *testing.T) {
	p := newPodman(t)
	name := p.startCounter()
	dir := t.TempDir()
	for round := 1; round <= 2; round++ {
		archive := filepath.Join(dir, "cp"+itoa(round)+".tar")
		at := p.checkpoint(name, "--export", archive)
		p.must("rm", "-f", "-t", "0", name)
		p.restore(name, at, "--import", archive)
	}
	checkContinuous(t, p.logCounts(name))
	// a copy beside the running original: --import --name, from a
	// --leave-running export; each counts on in its own memory and tmpfs
	archive := filepath.Join(dir, "copy.tar")
	at := p.checkpoint(name, "--leave-running", "--export", archive)
	copyName := name + "-copy"
	t.Cleanup(func() { p.run("rm", "-f", "-t", "0", copyName) })
	p.must("container", "restore", "--import", archive, "--name", copyName)
	p.waitCount(copyName, at+5)
	orig, cp := p.logCounts(name), p.logCounts(copyName)
	checkContinuous(t, orig)
	// the copy's log starts with the original's as exported, which the
	// running original wrote on after the checkpoint: the copy, counting
	// on from the checkpoint, repeats those last lines once, never more
	// than the export's lag and never from the start
	k := 0
	for i := 1; i < len(cp); i++ {
		if cp[i] <= cp[i-1] {
			if k != 0 {
				t.Fatalf("the copy's log goes back twice: %v", cp)
			}
			k = i
		}
	}
	if k > 0 && (cp[k] < at-20 || cp[k] > at+1) {
		t.Errorf("the copy counted on from %d, the checkpoint was at about %d: %v", cp[k], at, cp)
	}
	checkContinuous(t, cp[:max(k, 1)])
	for i := k + 1; i < len(cp); i++ {
		if cp[i] != cp[i-1]+1 {
			t.Errorf("the copy's count is not continuous after its restore: %v", cp[k:])
			break
		}
	}
}

// checkpoint --leave-running: the container counts on, untouched; stopped
// and restored from that checkpoint, it counts on from the checkpoint's
// state (memory and tmpfs agreeing), twice.
func TestReal_PodmanLeaveRunning(t *testing.T) {
	p := newPodman(t)
	name := p.startCounter()
	for round := 1; round <= 2; round++ {
		at := p.checkpoint(name, "--leave-running")
		if st := strings.TrimSpace(p.must("inspect", "--format", "{{.State.Status}}", name)); st != "running" {
			t.Fatalf("after checkpoint --leave-running the container is %q", st)
		}
		p.waitCount(name, at+5)
		p.must("stop", "-t", "0", name)
		before := len(p.logCounts(name))
		p.restore(name, at)
		// counting on from the checkpoint: the first count after the
		// restore follows the checkpoint's, not the stopped container's
		ns := p.logCounts(name)
		if len(ns) <= before || ns[before] > at+2 {
			t.Errorf("round %d: after the restore the count went on from %v, want from about %d", round, ns[before:min(len(ns), before+3)], at)
		}
	}
}

// A container joining another's network, IPC and UTS namespaces by path
// (podman run --network/--ipc/--uts container:OTHER, as in a pod): those
// namespaces are the platform's, neither saved nor rebuilt; restored twice,
// the container is in the other's namespaces again and counts on.
func TestReal_PodmanJoinedNamespaces(t *testing.T) {
	p := newPodman(t)
	img := p.image()
	owner := uniqueName("owner")
	t.Cleanup(func() { p.run("rm", "-f", "-t", "0", owner) })
	p.must("run", "-d", "--name", owner, "--network", "none", "--hostname", "owner-host",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", img, "sleep", "1000")
	ns := "container:" + owner
	name := p.startCounter("--network", ns, "--ipc", ns, "--uts", ns)
	// removed before the owner (registered after it: cleanups run last first)
	same := func() {
		t.Helper()
		for _, kind := range []string{"net", "ipc", "uts"} {
			a := strings.TrimSpace(p.must("exec", owner, "readlink", "/proc/1/ns/"+kind))
			b := strings.TrimSpace(p.must("exec", name, "readlink", "/proc/1/ns/"+kind))
			if a != b || a == "" {
				t.Errorf("%s namespace: owner %q, container %q", kind, a, b)
			}
		}
		if h := strings.TrimSpace(p.must("exec", name, "hostname")); h != "owner-host" {
			t.Errorf("hostname %q", h)
		}
	}
	same()
	for round := 1; round <= 2; round++ {
		at := p.checkpoint(name)
		p.restore(name, at)
		same()
	}
	checkContinuous(t, p.logCounts(name))
}

// A restore that fails shows the user ctr-cr's message: podman reads it
// from the --log file in the JSON format it asked for.
func TestReal_PodmanRestoreError(t *testing.T) {
	p := newPodman(t)
	name := p.startCounter()
	p.checkpoint(name)
	dir := strings.TrimSpace(p.must("inspect", "--format", "{{.StaticDir}}", name))
	meta := filepath.Join(dir, "checkpoint", "ctr-cr.json")
	if err := os.WriteFile(meta, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := p.run("container", "restore", name)
	// ctr-cr.json is listed with its checksum in the image's inventory:
	// the damage is found when the image is opened, before anything runs
	if err == nil || !strings.Contains(out, "ctr-cr restore: restore: validate: image") || !strings.Contains(out, "ctr-cr.json: checksum mismatch") {
		t.Fatalf("restore of a damaged image: %v\n%s", err, out)
	}
}

// A container with stdin open (podman run -i: conmon's pipe as fd 0):
// after two restores, a line written through podman attach reaches the
// restored shell (ending the attach session closes the shell's stdin, so
// it is done once).
func TestReal_PodmanInteractive(t *testing.T) {
	p := newPodman(t)
	img := p.image()
	name := uniqueName("podi")
	t.Cleanup(func() { p.run("rm", "-f", "-t", "0", name) })
	p.must("run", "-d", "-i", "--name", name, "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
		img, "sh", "-c", `n=0; echo ready; while read l; do n=$((n+1)); echo "got $n $l"; done`)
	waitFor(t, "the shell to start", func() bool { return strings.Contains(p.must("logs", name), "ready") })
	for round := 1; round <= 2; round++ {
		p.checkpoint(name)
		p.must("container", "restore", name)
	}
	cmd := exec.Command("podman", "--cgroup-manager", "cgroupfs", "--runtime", p.runtime, "attach", "--sig-proxy=false", name)
	cmd.Env = append(os.Environ(), "PATH="+p.path)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	in.Write([]byte("hello\n"))
	waitFor(t, "the restored shell to read the line", func() bool { return strings.Contains(p.must("logs", name), "got 1 hello") })
}

// A container on podman's default network (the CNI bridge, podman run
// --network bridge), with podman itself run in a network namespace of the
// test's own so that the bridge and its firewall rules are made there,
// never on the host: its network namespace is podman's, joined by path,
// neither saved nor rebuilt by ctr-cr; podman gives the restored container
// the same address again. Restored twice, it counts on and reaches the
// bridge's address.
func TestReal_PodmanBridgeNetwork(t *testing.T) {
	p := newPodman(t)
	p.netns = testutil.NewNetns(t) // deleted after the container (cleanups run last first)
	name := p.startCounter("--network", "bridge")
	ip := func() string {
		return strings.TrimSpace(p.must("inspect", "--format", "{{.NetworkSettings.IPAddress}}", name))
	}
	addr := ip()
	if addr == "" {
		t.Fatal("no address on the bridge")
	}
	for round := 1; round <= 2; round++ {
		at := p.checkpoint(name)
		p.restore(name, at)
		if a := ip(); a != addr {
			t.Errorf("round %d: address %q after the restore, %q before", round, a, addr)
		}
		// the restored container reaches a listener on the bridge
		gw := strings.TrimSpace(p.must("exec", name, "sh", "-c", "busybox ip route | busybox awk '/default/ {print $3}'"))
		lis := exec.Command("nsenter", "--net="+p.netns, "--", "busybox", "nc", "-l", "-p", "9999")
		var got strings.Builder
		lis.Stdout = &got
		// stdin held open: busybox nc ends the connection at its stdin's
		// EOF, which could come before the client's line
		stdinR, stdinW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		lis.Stdin = stdinR
		err = lis.Start()
		stdinR.Close()
		if err != nil {
			stdinW.Close()
			t.Fatal(err)
		}
		waitFor(t, "the listener on the bridge", func() bool {
			out, _ := exec.Command("nsenter", "--net="+p.netns, "--", "ss", "-Hltn", "sport = :9999").Output()
			return strings.Contains(string(out), "9999")
		})
		msg := "hello-" + itoa(round)
		ncOut, ncErr := p.run("exec", name, "sh", "-c", "echo "+msg+" | busybox nc -w 2 "+gw+" 9999; echo nc exit $?")
		done := make(chan struct{})
		go func() { lis.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			lis.Process.Kill()
			<-done
		}
		stdinW.Close()
		if !strings.Contains(got.String(), msg) {
			neigh, _ := exec.Command("nsenter", "--net="+p.netns, "--", "ip", "neigh").CombinedOutput()
			cneigh, _ := p.run("exec", name, "sh", "-c", "busybox ip neigh; busybox ip link")
			t.Errorf("round %d: the listener on the bridge (%s) got %q, want %q (nc: %s %v; bridge side neighbours:\n%s; container:\n%s)", round, gw, got.String(), msg, ncOut, ncErr, neigh, cneigh)
		}
	}
	checkContinuous(t, p.logCounts(name))
}

// tcpPeer is a TCP listener outside the container (in the test's network
// namespace, which holds podman's bridge), a Python program that accepts
// one connection and logs every line it receives.
const tcpPeer = `import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9999)); s.listen(1); print("listening", flush=True)
c, a = s.accept(); print("conn", flush=True)
for l in c.makefile(): print("n " + l.strip(), flush=True)
print("EOF", flush=True)
`

// tcpCounter counts into a TCP connection to the bridge's gateway (the
// peer) and, as "n I", into its log.
const tcpCounter = `gw=$(busybox ip route | busybox awk '/default/ {print $3}'); i=0; while :; do i=$((i+1)); echo $i; echo "n $i" >&2; sleep 0.1; done | busybox nc $gw 9999`

// An established TCP connection from a container on podman's bridge to a
// peer outside it, checkpointed and restored twice with --tcp-established:
// the peer goes on receiving on the same connection, every line once and
// in order.
func TestReal_PodmanTCPEstablished(t *testing.T) {
	requireTools(t, "python3", "nsenter")
	p := newPodman(t)
	p.netns = testutil.NewNetns(t)
	peerOut := filepath.Join(t.TempDir(), "peer.out")
	out, err := os.Create(peerOut)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	peer := exec.Command("nsenter", "--net="+p.netns, "--", "python3", "-c", tcpPeer)
	peer.Stdout, peer.Stderr = out, out
	if err := peer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Process.Kill(); peer.Wait() })
	peerLog := func() string { b, _ := os.ReadFile(peerOut); return string(b) }
	waitFor(t, "the peer to listen", func() bool { return strings.Contains(peerLog(), "listening") })
	name := p.startScript(tcpCounter, "--network", "bridge")
	received := func() []int {
		l := peerLog()
		if strings.Count(l, "conn") != 1 || strings.Contains(l, "EOF") {
			t.Fatalf("the connection was not kept:\n%s", l)
		}
		return counts(t, l)
	}
	for round := 1; round <= 2; round++ {
		at := p.checkpoint(name, "--tcp-established")
		p.restore(name, at, "--tcp-established")
		waitFor(t, "the peer to receive past the checkpoint", func() bool { return last(received()) > at+3 })
	}
	checkContinuous(t, received())
	checkContinuous(t, p.logCounts(name))
}

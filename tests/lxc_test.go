package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// lxcContainer is a busybox container of LXC in an lxcpath of the test's
// own, checkpointed and restored by lxc-checkpoint with ctr-cr as `criu`
// first on PATH.
type lxcContainer struct {
	t      *testing.T
	netns  string // the network namespace LXC runs in ("": ours)
	path   string // lxcpath
	name   string
	env    []string // PATH with the criu symlink first
	rootfs string
}

// newLXC creates and starts the container: no network (lxc.net.0.type =
// empty), no ttys, the busybox template's /lib and /lib64 binds from the
// real directories of this merged-/usr system; a shell loop inside counts
// in a variable and writes it to /tmp/count every 50 ms.
func newLXC(t *testing.T) *lxcContainer {
	return newLXCWith(t, "", "lxc.net.0.type = empty\n", "")
}

// newLXCWith is newLXC with LXC run in the network namespace netns (""
// ours), the network config lines net, and loop (a shell command) instead
// of the counting loop.
func newLXCWith(t *testing.T, netns, net, loop string) *lxcContainer {
	testutil.RequiresRoot(t)
	requireTools(t, "lxc-create", "lxc-start", "lxc-checkpoint", "lxc-attach", "lxc-info", "lxc-stop", "lxc-destroy", "busybox")
	bin := testutil.BuildCtrCr(t)
	c := &lxcContainer{t: t, netns: netns, path: t.TempDir(), name: fmt.Sprintf("ctrcr%d", os.Getpid())}
	c.rootfs = filepath.Join(c.path, c.name, "rootfs")
	pathDir := filepath.Join(c.path, "bin")
	if err := os.Mkdir(pathDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(pathDir, "criu")); err != nil {
		t.Fatal(err)
	}
	c.env = append(os.Environ(), "PATH="+pathDir+":"+os.Getenv("PATH"))
	base := filepath.Join(c.path, "base.conf")
	if err := os.WriteFile(base, []byte(net+"lxc.tty.max = 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.run("lxc-create", "-P", c.path, "-n", c.name, "-t", "busybox", "-f", base)
	t.Cleanup(func() {
		stop := lxcInNetns(netns, "lxc-stop", "-P", c.path, "-n", c.name, "-k")
		exec.Command(stop[0], stop[1:]...).Run()
		exec.Command("lxc-destroy", "-P", c.path, "-n", c.name).Run()
	})
	cfgPath := filepath.Join(c.path, c.name, "config")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(cfg), "\n") {
		switch {
		case strings.HasPrefix(l, "lxc.tty.max") && !strings.HasSuffix(l, "= 0"):
			continue
		case strings.HasPrefix(l, "lxc.mount.entry = /lib lib "):
			l = strings.Replace(l, "/lib lib ", "/usr/lib lib ", 1)
		case strings.HasPrefix(l, "lxc.mount.entry = /lib64 lib64 "):
			l = strings.Replace(l, "/lib64 lib64 ", "/usr/lib64 lib64 ", 1)
		}
		lines = append(lines, l)
	}
	if err := os.WriteFile(cfgPath, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	// started by init's rcS, so that it sits in the container's cgroup
	// (what lxc-attach starts goes into a cgroup below it, which is
	// refused while it runs)
	rcs := filepath.Join(c.rootfs, "etc", "init.d", "rcS")
	if strings.Contains(net, "ipv4.address") {
		// the template's rcS asks DHCP, which takes the static address off
		b, err := os.ReadFile(rcs)
		if err != nil {
			t.Fatal(err)
		}
		var keep []string
		for _, l := range strings.Split(string(b), "\n") {
			if !strings.Contains(l, "udhcpc") {
				keep = append(keep, l)
			}
		}
		if err := os.WriteFile(rcs, []byte(strings.Join(keep, "\n")), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(rcs, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	// a subshell of rcS, which exits: its session and group have no
	// leader any more
	if loop == "" {
		loop = "(i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; usleep 50000; done) </dev/null >/dev/null 2>&1 &"
	}
	_, err = f.WriteString("\n" + loop + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	c.run("lxc-start", "-P", c.path, "-n", c.name, "-d", "-l", "ERROR", "-o", filepath.Join(c.path, "lxc.log"))
	c.waitState("RUNNING")
	if !strings.Contains(loop, "count.new") {
		return c
	}
	c.waitCount(10)
	return c
}

// run runs an LXC command with the test's PATH and fails the test on error.
func (c *lxcContainer) run(name string, args ...string) string {
	c.t.Helper()
	// output to a file, not a pipe: lxc-start's monitor (and so a
	// restored container) inherits it and would hold a pipe open
	f, err := os.CreateTemp(c.path, "out-")
	if err != nil {
		c.t.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	argv := lxcInNetns(c.netns, append([]string{name}, args...)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	out, _ := os.ReadFile(f.Name())
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, c.criuLogs())
	}
	return string(out)
}

// criuLogs returns the tails of the dump.log and restore.log files ctr-cr
// wrote for lxc-checkpoint, for failure messages.
func (c *lxcContainer) criuLogs() string {
	var b strings.Builder
	logs, _ := filepath.Glob(filepath.Join(c.path, "img*", "*.log"))
	logs = append(logs, filepath.Join(c.path, "lxc.log"))
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		s := string(data)
		if len(s) > 2000 {
			s = s[len(s)-2000:]
		}
		fmt.Fprintf(&b, "--- %s ---\n%s\n", l, s)
	}
	return b.String()
}

func (c *lxcContainer) state() string {
	argv := lxcInNetns(c.netns, "lxc-info", "-P", c.path, "-n", c.name, "-s")
	out, _ := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "State:"))
}

func (c *lxcContainer) waitState(want string) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.state() != want {
		if time.Now().After(deadline) {
			c.t.Fatalf("container %s: state %q, want %q%s", c.name, c.state(), want, c.criuLogs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// count reads the counter the shell loop inside writes (0 if none yet).
func (c *lxcContainer) count() int {
	b, err := os.ReadFile(filepath.Join(c.rootfs, "tmp", "count"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// waitCount waits until the counter is past n.
func (c *lxcContainer) waitCount(n int) int {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v := c.count(); v > n {
			return v
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("container %s: the counter is stuck at %d (want past %d)%s", c.name, c.count(), n, c.criuLogs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inside checks the container from inside: lxc-attach runs, the hostname
// is the container's, and the counting loop is still there with its pid.
func (c *lxcContainer) inside(loopPid string) string {
	c.t.Helper()
	out := c.run("lxc-attach", "-P", c.path, "-n", c.name, "--", "/bin/sh", "-c", "hostname; ps -o pid,args")
	if !strings.HasPrefix(out, c.name+"\n") {
		c.t.Fatalf("hostname inside is not %s:\n%s", c.name, out)
	}
	pid, found := "", false
	for _, l := range strings.Split(out, "\n") {
		// busybox ps names the forked subshell of rcS {rcS}; its children
		// of the moment show their applet ({usleep}, {mv}), or {rcS} too
		// between their fork and their exec: the loop is the first (ps
		// lists by pid), or the one with the expected pid
		if f := strings.Fields(l); len(f) > 1 && f[1] == "{rcS}" {
			if pid == "" {
				pid = f[0]
			}
			found = found || f[0] == loopPid
		}
	}
	if found {
		pid = loopPid
	}
	if pid == "" || (loopPid != "" && pid != loopPid) {
		c.t.Fatalf("the counting loop inside is pid %q, want %q:\n%s", pid, loopPid, out)
	}
	return pid
}

// cycle checkpoints the container into a fresh directory (stopping it, or
// leaving it running) and restores it from there: the counter goes on from
// where the checkpoint left it, LXC sees it RUNNING, attach works.
func (c *lxcContainer) cycle(i int, leaveRunning bool, loopPid string) {
	c.t.Helper()
	img := filepath.Join(c.path, fmt.Sprintf("img%d", i))
	if err := os.Mkdir(img, 0o700); err != nil {
		c.t.Fatal(err)
	}
	args := []string{"-P", c.path, "-n", c.name, "-D", img}
	if !leaveRunning {
		args = append(args, "-s")
	}
	c.run("lxc-checkpoint", args...)
	atDump := c.count()
	if leaveRunning {
		c.waitState("RUNNING")
		c.waitCount(atDump + 20) // a second on: the restore must go back
		c.run("lxc-stop", "-P", c.path, "-n", c.name, "-k")
	}
	c.waitState("STOPPED")
	stale := c.count() // the last value written before the container stopped
	c.run("lxc-checkpoint", "-P", c.path, "-n", c.name, "-r", "-D", img)
	c.waitState("RUNNING")
	now := c.waitChange(stale)
	switch {
	case !leaveRunning && now <= atDump:
		c.t.Fatalf("cycle %d: the counter is %d after the restore, %d at the checkpoint", i, now, atDump)
	case leaveRunning && now >= stale:
		// it ran on after the checkpoint: the restored loop goes back
		c.t.Fatalf("cycle %d: the counter is %d after the restore, %d when the container was killed after the checkpoint", i, now, stale)
	case now < 10:
		c.t.Fatalf("cycle %d: the counter restarted (%d)", i, now)
	}
	c.inside(loopPid)
}

// waitChange waits until the counter differs from old.
func (c *lxcContainer) waitChange(old int) int {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v := c.count(); v != old {
			return v
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("container %s: the counter is stuck at %d%s", c.name, old, c.criuLogs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCheckpoint_LXC: a busybox container of LXC with a counting loop and
// no network, `lxc-checkpoint -s` and `lxc-checkpoint -r` twice with ctr-cr
// as criu: the counter goes on from its value at the checkpoint (the
// loop's memory came back, not a new loop), its pid inside is the same,
// lxc-info says RUNNING, lxc-attach works, lxc-stop stops it after.
func TestCheckpoint_LXC(t *testing.T) {
	c := newLXC(t)
	loop := c.inside("")
	for i := 0; i < 2; i++ {
		c.cycle(i, false, loop)
	}
	c.run("lxc-stop", "-P", c.path, "-n", c.name, "-k")
	c.waitState("STOPPED")
}

// TestCheckpoint_LXCLeaveRunning: the same without -s: the container runs
// on after each checkpoint (the counter goes on), is then killed, and the
// restore brings back the state of the checkpoint.
func TestCheckpoint_LXCLeaveRunning(t *testing.T) {
	c := newLXC(t)
	loop := c.inside("")
	for i := 0; i < 2; i++ {
		c.cycle(i, true, loop)
	}
	c.run("lxc-stop", "-P", c.path, "-n", c.name, "-k")
	c.waitState("STOPPED")
}

// TestNegative_LXCAttachedTask: a task that lxc-attach runs (in the
// container's pid namespace but not a descendant of its init) makes
// lxc-checkpoint fail, naming it; the container runs on, the counter going.
// (One that the container's init inherits is in the tree, and refused for
// its cgroup .lxc below the container's.)
func TestNegative_LXCAttachedTask(t *testing.T) {
	c := newLXC(t)
	att := exec.Command("lxc-attach", "-P", c.path, "-n", c.name, "--", "/bin/sleep", "1000")
	att.Env = c.env
	if err := att.Start(); err != nil {
		t.Fatal(err)
	}
	sleepPid := 0
	defer func() {
		// the sleep goes to us (a subreaper) once lxc-attach is gone:
		// reap it, or the container's init waits for it forever
		att.Process.Kill()
		att.Wait()
		if sleepPid > 0 {
			killAndReap(sleepPid)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for sleepPid == 0 {
		for _, p := range descendants(att.Process.Pid) {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); strings.TrimSpace(string(comm)) == "sleep" {
				sleepPid = p
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the attached sleep does not run")
		}
		time.Sleep(20 * time.Millisecond)
	}
	img := filepath.Join(c.path, "img0")
	if err := os.Mkdir(img, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("lxc-checkpoint", "-P", c.path, "-n", c.name, "-s", "-D", img)
	cmd.Env = c.env
	f, err := os.CreateTemp(c.path, "out-")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Run(); err == nil {
		t.Fatal("lxc-checkpoint succeeded with an attached task in .lxc")
	}
	out, _ := os.ReadFile(f.Name())
	if !strings.Contains(string(out), "is not a descendant of its init") || !strings.Contains(string(out), "(sleep)") {
		t.Fatalf("the refusal does not name the attached task:\n%s", out)
	}
	c.waitState("RUNNING")
	c.waitCount(c.count() + 5)
}

// lxcPeer is a TCP sink in the test's network namespace: it accepts one
// connection at a time on 192.0.2.1:5000 and records the number of
// connections it accepted and the last line received.
const lxcPeer = `
import os, socket, sys
d = sys.argv[1]
def put(name, v):
    open(os.path.join(d, name + ".new"), "w").write(v)
    os.rename(os.path.join(d, name + ".new"), os.path.join(d, name))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.0.2.1", 5000))
s.listen(1)
put("ready", "1")
n = 0
while True:
    c, _ = s.accept()
    n += 1
    put("accepts", str(n))
    for line in c.makefile():
        put("last", line.strip())
`

// TestCheckpoint_LXCVeth: a busybox container of LXC with a veth on a
// bridge of a network namespace the test owns (LXC and lxc-checkpoint run
// there), whose loop sends a counter over an established TCP connection to
// a peer in that namespace: checkpointed (-s) and restored twice, the
// connection survives (the peer accepted one connection only, and the
// counter goes on from where it was at the checkpoint).
func TestCheckpoint_LXCVeth(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "ip", "nsenter", "python3", "nft")
	ns := testutil.NewNetns(t)
	for _, a := range [][]string{
		{"link", "add", "ctrcrbr0", "type", "bridge"},
		{"addr", "add", "192.0.2.1/24", "dev", "ctrcrbr0"},
		{"link", "set", "ctrcrbr0", "up"},
	} {
		argv := testutil.InNetns(ns, append([]string{"ip"}, a...)...)
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", a, err, out)
		}
	}
	peerDir := t.TempDir()
	peer := startDaemon(t, ns, "peer", "python3", "-c", lxcPeer, peerDir)
	var c *lxcContainer
	read := func(name string) int {
		b, _ := os.ReadFile(filepath.Join(peerDir, name))
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	waitPast := func(what string, n int) int {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for read("last") <= n {
			if time.Now().After(deadline) {
				inside := c.run("lxc-attach", "-P", c.path, "-n", c.name, "--", "/bin/sh", "-c", "ip addr; ip route; ps")
				t.Fatalf("%s: the peer's counter is stuck at %d (accepts %d)\ninside:\n%s\npeer:\n%s", what, read("last"), read("accepts"), inside, tail(peer.out, 10))
			}
			time.Sleep(20 * time.Millisecond)
		}
		return read("last")
	}
	for deadline := time.Now().Add(10 * time.Second); read("ready") != 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the peer does not listen:\n%s", tail(peer.out, 10))
		}
	}
	// the connection is retried until the container's network is up; a
	// second accepted connection would show a broken one
	c = newLXCWith(t, ns, "lxc.net.0.type = veth\nlxc.net.0.link = ctrcrbr0\nlxc.net.0.flags = up\nlxc.net.0.name = eth0\nlxc.net.0.ipv4.address = 192.0.2.2/24\n",
		"(while :; do (i=0; while :; do i=$((i+1)); echo $i; usleep 50000; done) | nc 192.0.2.1 5000; usleep 100000; done) </dev/null >/dev/null 2>&1 &")
	waitPast("start", 10)
	for i := 0; i < 2; i++ {
		img := filepath.Join(c.path, fmt.Sprintf("img%d", i))
		if err := os.Mkdir(img, 0o700); err != nil {
			t.Fatal(err)
		}
		c.run("lxc-checkpoint", "-P", c.path, "-n", c.name, "-s", "-D", img)
		c.waitState("STOPPED")
		atDump := read("last")
		time.Sleep(300 * time.Millisecond) // the peer sees nothing meanwhile: no reset, no data
		if read("last") != atDump || read("accepts") != 1 {
			t.Fatalf("cycle %d: while checkpointed the peer saw %d (was %d), %d connections", i, read("last"), atDump, read("accepts"))
		}
		c.run("lxc-checkpoint", "-P", c.path, "-n", c.name, "-r", "-D", img)
		c.waitState("RUNNING")
		waitPast(fmt.Sprintf("cycle %d", i), atDump+5)
		if n := read("accepts"); n != 1 {
			t.Fatalf("cycle %d: the peer accepted %d connections: the connection did not survive", i, n)
		}
	}
	c.run("lxc-stop", "-P", c.path, "-n", c.name, "-k")
	c.waitState("STOPPED")
}

// lxcInNetns prefixes argv to run in the network namespace at path, in a
// private mount namespace whose /sys/class/net is that of a sysfs mounted
// there (LXC finds bridges through it); the rest of /sys, the cgroup
// hierarchies included, stays (`ip netns exec` would hide them).
func lxcInNetns(path string, argv ...string) []string {
	if path == "" {
		return argv
	}
	const script = `d=$(mktemp -d) && mount -t sysfs sysfs "$d" && mount --bind "$d/class/net" /sys/class/net && mount --bind "$d/devices/virtual/net" /sys/devices/virtual/net && umount -l "$d" && rmdir "$d" && exec "$@"`
	return append([]string{"nsenter", "--net=" + path, "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh"}, argv...)
}

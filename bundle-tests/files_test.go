package bundletests

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// buildStatic compiles testdata/<name>.c statically into the rootfs's
// /bin/<name>.
func (b *bundle) buildStatic(name string, flags ...string) {
	b.t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		b.t.Fatalf("gcc is needed: %v", err)
	}
	src, _ := filepath.Abs(filepath.Join("testdata", name+".c"))
	args := append([]string{"-static", "-O1", "-o", filepath.Join(b.dir, "rootfs", "bin", name), src}, flags...)
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		b.t.Fatalf("gcc -static %s: %v\n%s", name, err, out)
	}
}

// startWithConsole runs the container detached with its console's master
// sent to cs (`RUNTIME run -d --console-socket`), registers its removal and
// returns the master.
func (b *bundle) startWithConsole(cs *consoleSocket) *os.File {
	b.t.Helper()
	if out, err := exec.Command(b.runtime, "run", "-d", "--console-socket", cs.path, "--bundle", b.dir, b.id).CombinedOutput(); err != nil {
		b.t.Fatalf("%s run -d --console-socket: %v\n%s", b.runtime, err, out)
	}
	b.t.Cleanup(func() { b.rt("delete", "--force", b.id) })
	return cs.master(b.t)
}

// waitFile waits until the rootfs has path.
func (b *bundle) waitFile(path string) {
	b.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(b.dir, "rootfs", path)); err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("container %s: no %s after 10s", b.id, path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// askUnixsk connects to testdata/unixsk's listener from outside, through
// the socket file on the bundle's rootfs (or, when /run is a tmpfs, in
// /proc/PID/root of the container's init), and returns its answer to
// "check n".
func (b *bundle) askUnixsk(n int, tmpfs bool) (string, error) {
	path := filepath.Join(b.dir, "rootfs", "run", "app.sock")
	if tmpfs {
		path = fmt.Sprintf("/proc/%d/root/run/app.sock", b.pidOf())
	}
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("connect from outside: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "check %d\n", n); err != nil {
		return "", err
	}
	out, err := io.ReadAll(c)
	return strings.TrimSpace(string(out)), err
}

// TestRestore_UnixSocketPath: the container's init (testdata/unixsk.c)
// listens on /run/app.sock, a path inside the container, holds a
// connection to it and a dgram socket bound at /run/app.dgram with a
// datagram queued by a sender connected to it by path, and a dgram socket
// bound at /run/gone.sock, unlinked since. After each of two
// checkpoint/restore cycles, the names are the container's paths again
// (getsockname/getpeername inside), the kept connection passes data both
// ways, the queued datagram is there, the unlinked name is the socket's
// and its path is still gone, new connections to the path work
// from inside and from outside (through the bundle's rootfs: the socket
// file is the restored listener's), and no socket file was made in
// ctr-cr's own root. Run with /run on the rootfs (a stale socket file is
// left there by the checkpoint) and on a tmpfs (its contents are restored
// without the socket files).
func TestRestore_UnixSocketPath(t *testing.T) {
	forRuntimes(t, func(t *testing.T, rt string) {
		t.Run("rootfs", func(t *testing.T) { testUnixSocketPath(t, rt, false) })
		t.Run("tmpfs", func(t *testing.T) { testUnixSocketPath(t, rt, true) })
	})
}

func testUnixSocketPath(t *testing.T, rt string, tmpfs bool) {
	for _, p := range []string{"/run/app.sock", "/run/app.dgram", "/run/gone.sock"} {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists on the host: the test would not see a socket file made there", p)
		}
	}
	b := newBundle(t, rt, "exec /bin/unixsk")
	b.buildStatic("unixsk")
	if tmpfs {
		b.editSpec(func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=1m"}})
		})
	}
	b.start()
	b.waitFile("tmp/ready")
	n := 1
	if out, err := b.askUnixsk(n, tmpfs); err != nil || out != "OK" {
		t.Fatalf("before the checkpoint: %v: %s", err, out)
	}
	for cycle := 0; cycle < 2; cycle++ {
		b.checkpoint(cycle)
		b.restore(cycle)
		n++
		if out, err := b.askUnixsk(n, tmpfs); err != nil || out != "OK" {
			t.Fatalf("cycle %d: in the restored container: %v: %s", cycle, err, out)
		}
		for _, p := range []string{"/run/app.sock", "/run/app.dgram", "/run/gone.sock"} {
			if _, err := os.Lstat(p); err == nil {
				os.Remove(p)
				t.Fatalf("cycle %d: the restore made %s in ctr-cr's own root", cycle, p)
			}
		}
	}
}

// consoleSocket listens on a unix socket for the pty masters a runtime
// sends (SCM_RIGHTS) when it creates a container with a terminal.
type consoleSocket struct {
	path    string
	l       *net.UnixListener
	masters chan *os.File
}

func newConsoleSocket(t *testing.T) *consoleSocket {
	t.Helper()
	cs := &consoleSocket{path: filepath.Join(t.TempDir(), "console.sock"), masters: make(chan *os.File, 4)}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: cs.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	cs.l = l
	t.Cleanup(func() {
		l.Close()
		for {
			select {
			case m := <-cs.masters:
				m.Close()
			default:
				return
			}
		}
	})
	go func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			buf, oob := make([]byte, 256), make([]byte, 256)
			_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			c.Close()
			if err != nil {
				continue
			}
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				fds, _ := unix.ParseUnixRights(&m)
				for _, fd := range fds {
					// non-blocking: the runtime poller serves it, so read
					// deadlines work
					unix.SetNonblock(fd, true)
					cs.masters <- os.NewFile(uintptr(fd), "pty master")
				}
			}
		}
	}()
	return cs
}

// master waits for the next master sent to the socket.
func (cs *consoleSocket) master(t *testing.T) *os.File {
	t.Helper()
	select {
	case m := <-cs.masters:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no pty master came over the console socket")
		return nil
	}
}

// converse writes line to the console's master and reads until the
// output holds want (or fails after a while); it returns all it read.
func converse(t *testing.T, m *os.File, line, want string) string {
	t.Helper()
	if _, err := m.Write([]byte(line + "\n")); err != nil {
		t.Fatalf("write %q to the console: %v", line, err)
	}
	return readUntil(t, m, line, want)
}

// readUntil reads the console's master until the output holds want.
func readUntil(t *testing.T, m *os.File, line, want string) string {
	t.Helper()
	var out []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(string(out), want) {
		m.SetReadDeadline(deadline)
		n, err := m.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			t.Fatalf("console: after %q read %q, want %q: %v", line, out, want, err)
		}
	}
	return string(out)
}

// TestRestore_Terminal: a container with a terminal (process.terminal)
// runs busybox sh answering lines on its console, with echo off and a
// window size set by the test, which holds the console's master (received
// on its console socket from runc run -d --console-socket). It is
// checkpointed and restored with --console-socket twice, each time while
// the shell waits for a sleep and a line typed ahead waits in the
// console (a checkpoint --leave-running leaves it there): each time a new
// master arrives, and once the sleep is killed
// the shell reads the line typed ahead and answers through the new
// master; its terminal is /dev/pts/0 and its controlling terminal, with
// the window size and no echo as before.
func TestRestore_Terminal(t *testing.T) { forRuntimes(t, testRestoreTerminal) }

func testRestoreTerminal(t *testing.T, rt string) {
	b := newBundle(t, rt, `busybox stty -echo; echo ready; while read l; do case "$l" in tty) busybox tty;; size) busybox stty size;; pause) sleep 1000; echo resumed;; *) echo "got:$l";; esac; done`)
	b.editSpec(func(s *specs.Spec) { s.Process.Terminal = true })
	cs := newConsoleSocket(t)
	m := b.startWithConsole(cs)
	defer func() { m.Close() }()
	converse(t, m, "", "ready")
	// a process dump has no console to give it back on
	if out, err := ctrcr(t, "dump", "-t", strconv.Itoa(b.pidOf()), "-D", t.TempDir(), "--leave-running"); err == nil || !strings.Contains(out, "ctr-cr checkpoint ID") {
		t.Fatalf("process dump of a container with a terminal: %v\n%s", err, out)
	}
	ws := &unix.Winsize{Row: 33, Col: 111}
	if err := unix.IoctlSetWinsize(int(m.Fd()), unix.TIOCSWINSZ, ws); err != nil {
		t.Fatal(err)
	}
	if out := converse(t, m, "size", "33 111"); strings.Contains(out, "size") {
		t.Fatalf("before the checkpoint: echo is on: %q", out)
	}
	for cycle := 0; cycle < 2; cycle++ {
		// the shell is busy; a line typed ahead waits in the console
		if _, err := m.Write([]byte("pause\n")); err != nil {
			t.Fatal(err)
		}
		waitSleep(t, b.pidOf())
		ahead := fmt.Sprintf("typed ahead %d", cycle)
		if _, err := m.Write([]byte(ahead + "\n")); err != nil {
			t.Fatal(err)
		}
		waitQueued(t, b.pidOf(), len(ahead)+1)
		if cycle == 0 {
			// the input read out is put back when the container runs on
			if out, err := ctrcr(t, "checkpoint", "--leave-running", "--image-path", t.TempDir(), b.id); err != nil {
				t.Fatalf("checkpoint --leave-running: %v\n%s", err, out)
			}
			waitQueued(t, b.pidOf(), len(ahead)+1)
		}
		b.checkpoint(cycle)
		m.Close()
		if out, err := ctrcr(t, "show", filepath.Join(b.dir, "checkpoint")); err != nil || !strings.Contains(out, "container console /dev/pts/0 (master outside): canonical isig, 111x33, controlling terminal of session") {
			t.Errorf("cycle %d: show: %v\n%s", cycle, err, out)
		}
		if out, err := ctrcr(t, "restore", "-d", b.dir); err == nil || !strings.Contains(out, "--console-socket") {
			b.rt("delete", "--force", b.id)
			t.Fatalf("cycle %d: restore without --console-socket: %v\n%s", cycle, err, out)
		}
		if out, err := ctrcr(t, "restore", "-d", "--console-socket", cs.path, b.dir); err != nil {
			t.Fatalf("cycle %d: restore: %v\n%s", cycle, err, out)
		}
		m = cs.master(t)
		pid := b.pidOf()
		unix.Kill(waitSleep(t, pid), unix.SIGKILL)
		if out := readUntil(t, m, "(typed ahead)", "got:"+ahead); !strings.Contains(out, "resumed") {
			t.Errorf("cycle %d: after the sleep: %q", cycle, out)
		}
		for _, c := range []struct{ line, want string }{{"tty", "/dev/pts/0"}, {"size", "33 111"}, {fmt.Sprintf("hello %d", cycle), fmt.Sprintf("got:hello %d", cycle)}} {
			if out := converse(t, m, c.line, c.want); strings.TrimSpace(out) != c.want {
				t.Errorf("cycle %d: %q answered %q, want only %q (no echo)", cycle, c.line, out, c.want)
			}
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", pid)); err != nil || l != "/dev/pts/0" {
			t.Errorf("cycle %d: the restored init's stdin is %q (%v), want /dev/pts/0", cycle, l, err)
		}
		if f := statFields(pid); len(f) < 5 || f[4] != strconv.Itoa(136<<8) {
			t.Errorf("cycle %d: the restored init's tty_nr is not /dev/pts/0's: %q", cycle, f)
		}
	}
}

// TestRestore_UnixSocketExternal: the container's init (testdata/unixsk.c
// ext) is connected to /run/ext.sock, served by an echo server outside
// its tree (unixsk ext-server, started with nsenter in the container's
// mount namespace, so the name is the container's path). Checkpointed
// with --ext-unix-sk and restored twice, it is connected to the server
// again by that path, resolved in the restored container's root, and
// the echo goes through; the other checks of TestRestore_UnixSocketPath
// hold too.
func TestRestore_UnixSocketExternal(t *testing.T) { forRuntimes(t, testRestoreUnixSocketExternal) }

func testRestoreUnixSocketExternal(t *testing.T, rt string) {
	if _, err := os.Lstat("/run/ext.sock"); err == nil {
		t.Fatal("/run/ext.sock exists on the host: the test would connect to it")
	}
	b := newBundle(t, rt, "exec /bin/unixsk ext")
	b.buildStatic("unixsk")
	b.start()
	srv := exec.Command("nsenter", "-t", strconv.Itoa(b.pidOf()), "-m", "-r", "/bin/unixsk", "ext-server")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Kill()
		srv.Wait()
	})
	b.waitFile("tmp/ready")
	n := 1
	if out, err := b.askUnixsk(n, false); err != nil || out != "OK" {
		t.Fatalf("before the checkpoint: %v: %s", err, out)
	}
	if out, err := ctrcr(t, "checkpoint", "--leave-running", b.id); err == nil || !strings.Contains(out, "--ext-unix-sk") {
		t.Fatalf("checkpoint without --ext-unix-sk: %v\n%s", err, out)
	}
	for cycle := 0; cycle < 2; cycle++ {
		b.checkpoint(cycle, "--ext-unix-sk")
		b.restore(cycle)
		n++
		if out, err := b.askUnixsk(n, false); err != nil || out != "OK" {
			t.Fatalf("cycle %d: in the restored container: %v: %s", cycle, err, out)
		}
	}
}

// statFields returns the fields of /proc/PID/stat after the command.
func statFields(pid int) []string {
	f, _ := testutil.StatFields(pid)
	return f
}

// fgJob returns the pid of the child of pid running comm, and whether its
// group is the foreground group of the terminal of pid (tpgid).
func fgJob(pid int, comm string) (int, bool) {
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, k := range strings.Fields(string(kids)) {
		kid, _ := strconv.Atoi(k)
		if c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", kid)); strings.TrimSpace(string(c)) != comm {
			continue
		}
		f, pf := statFields(kid), statFields(pid)
		// fields after the command: state ppid pgrp session tty_nr tpgid
		return kid, len(f) > 5 && len(pf) > 5 && f[2] == pf[5] && f[2] != pf[2]
	}
	return 0, false
}

// TestRestore_TerminalJobControl: an interactive busybox sh on a
// container's console runs sleep in the foreground (its own process group
// is the console's foreground group). After checkpoint and restore with
// --console-socket, the sleep's group is the foreground group of the new
// console again: ^C typed on the new master interrupts the sleep, not the
// shell, which then runs the next command.
func TestRestore_TerminalJobControl(t *testing.T) { forRuntimes(t, testRestoreTerminalJobControl) }

func testRestoreTerminalJobControl(t *testing.T, rt string) {
	b := newBundle(t, rt, "")
	b.editSpec(func(s *specs.Spec) {
		s.Process.Terminal = true
		s.Process.Args = []string{"sh"}
	})
	cs := newConsoleSocket(t)
	m := b.startWithConsole(cs)
	defer func() { m.Close() }()
	converse(t, m, "echo up-$((20+22))", "up-42")
	if _, err := m.Write([]byte("sleep 1000\n")); err != nil {
		t.Fatal(err)
	}
	pid := b.pidOf()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, fg := fgJob(pid, "sleep"); fg {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sleep did not become the console's foreground job")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}
	m.Close()
	if out, err := ctrcr(t, "restore", "-d", "--console-socket", cs.path, b.dir); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	m = cs.master(t)
	pid = b.pidOf()
	sleep, fg := fgJob(pid, "sleep")
	if sleep == 0 || !fg {
		t.Fatalf("after the restore, sleep (pid %d) is not the foreground job of the console: init %v, sleep %v", sleep, statFields(pid), statFields(sleep))
	}
	if _, err := m.Write([]byte{3}); err != nil { // ^C
		t.Fatal(err)
	}
	converse(t, m, "echo after-$((40+2))", "after-42")
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", sleep)); err == nil {
		if st := statFields(sleep); len(st) > 0 && st[0] != "Z" {
			t.Errorf("sleep %d survived ^C: %v", sleep, st)
		}
	}
}

// waitSleep waits until the shell pid runs a sleep, and returns its pid.
func waitSleep(t *testing.T, pid int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if kid, _ := fgJob(pid, "sleep"); kid != 0 {
			return kid
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d runs no sleep", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitQueued waits until the console of the container whose init is pid
// holds n bytes of input (TIOCINQ on a slave of our own).
func waitQueued(t *testing.T, pid, n int) {
	t.Helper()
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/root/dev/pts/0", pid), unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if q, err := unix.IoctlGetInt(fd, unix.TIOCINQ); err == nil && q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the console does not hold the %d bytes typed ahead", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRestore_TerminalInnerPty: a container with a terminal whose process
// also holds both ends of a pty pair of the container's own devpts (as tmux
// would): the pair is a pty of the image, not a second console; it comes
// back in the new container's devpts with its index and the line round
// trips through it go on after each of two restores.
func TestRestore_TerminalInnerPty(t *testing.T) { forRuntimes(t, testRestoreTerminalInnerPty) }

func testRestoreTerminalInnerPty(t *testing.T, rt string) {
	b := newBundle(t, rt, "exec /bin/innerpty")
	b.buildStatic("innerpty")
	b.editSpec(func(s *specs.Spec) { s.Process.Terminal = true })
	cs := newConsoleSocket(t)
	m := b.startWithConsole(cs)
	defer func() { m.Close() }()
	b.waitCount(2)
	for cycle := 0; cycle < 2; cycle++ {
		b.checkpoint(cycle)
		at := b.count()
		if out, err := ctrcr(t, "show", filepath.Join(b.dir, "checkpoint")); err != nil || !strings.Contains(out, "container console /dev/pts/0") {
			t.Errorf("cycle %d: show: %v\n%s", cycle, err, out)
		}
		m.Close()
		if out, err := ctrcr(t, "restore", "-d", "--console-socket", cs.path, b.dir); err != nil {
			t.Fatalf("cycle %d: restore: %v\n%s", cycle, err, out)
		}
		m = cs.master(t)
		if c := b.waitCount(at + 2); c < 0 {
			t.Fatalf("cycle %d: a round trip through the inner pty failed", cycle)
		}
		pid := b.pidOf()
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", pid)); err != nil || l != "/dev/pts/ptmx" {
			t.Errorf("cycle %d: the inner master is %q (%v), want the container's /dev/pts/ptmx", cycle, l, err)
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/4", pid)); err != nil || l != "/dev/pts/1" {
			t.Errorf("cycle %d: the inner slave is %q (%v), want /dev/pts/1", cycle, l, err)
		}
	}
}

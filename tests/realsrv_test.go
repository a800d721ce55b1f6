package tests

// Real servers checkpointed and restored twice, as a user runs them: sshd
// with a live ssh session (its per-connection processes and their
// socketpairs whose other ends were closed), and a JVM with a few hundred
// MiB of heap and 20+ threads. Each is checked from inside (the session's
// shell answers with its own pid, the JVM checks its heap and threads).

import (
	"bufio"
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

// sshdConfig is an sshd_config for a test sshd on 127.0.0.1:port that
// lets root in with the key whose public half is in dir/authorized_keys.
func sshdConfig(dir string, port int) string {
	return fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s/hostkey
AuthorizedKeysFile %s/authorized_keys
PermitRootLogin yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
`, port, dir, dir)
}

// TestReal_Sshd: sshd with a live ssh session (a shell reading lines and
// answering each with its own pid) is dumped with --tcp-established and
// restored twice while the ssh client (not in the dump) stays connected:
// after each restore the same shell answers on the same connection, and
// sshd accepts a new connection.
func TestReal_Sshd(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "ssh", "ssh-keygen", "nft", "ip", "nsenter")
	sshd := "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		t.Fatalf("sshd (openssh-server) is needed: %v", err)
	}
	dir := t.TempDir()
	for _, k := range []string{"hostkey", "clientkey"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "clientkey.pub"))
	if err != nil {
		t.Fatal(err)
	}
	const port = 12222
	cfg := filepath.Join(dir, "sshd_config")
	for name, data := range map[string]string{"authorized_keys": string(pub), "sshd_config": sshdConfig(dir, port)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// sshd's privilege separation directory (Debian's package makes it at
	// boot through tmpfiles.d, which a container-less CI machine may not run).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	ns := testutil.NewNetns(t)
	srv := startDaemon(t, ns, "sshd", sshd, "-D", "-e", "-f", cfg)
	ssh := func(remote string) *exec.Cmd {
		argv := testutil.InNetns(ns, "ssh", "-T", "-i", filepath.Join(dir, "clientkey"), "-p", strconv.Itoa(port),
			"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
			"-o", "LogLevel=ERROR", "root@127.0.0.1", remote)
		return exec.Command(argv[0], argv[1:]...)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := ssh("echo up").CombinedOutput()
		if err == nil && strings.TrimSpace(string(out)) == "up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd does not let us in: %v: %s\n%s", err, out, tail(srv.out, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// the session that stays open across the restores
	cmd := ssh(`while read l; do echo "got-$l-$$"; done`)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	sess := &lineClient{in: in, out: bufio.NewReader(stdout)}
	first := sess.do(t, "hello")
	shellPid := strings.TrimPrefix(first, "got-hello-")
	if shellPid == first {
		t.Fatalf("session answered %q", first)
	}
	if n := len(descendants(srv.pid)); n < 2 {
		t.Fatalf("sshd has %d descendants with a session open, want the session's sshd and shell", n)
	}
	for i := 0; i < 2; i++ {
		srv.cycle(t, i, nil, "--tcp-established")
		if n := lockTables(t, ns); len(n) != 0 {
			t.Errorf("cycle %d: lock tables after restore: %v", i, n)
		}
		if got, want := sess.do(t, fmt.Sprintf("after%d", i)), fmt.Sprintf("got-after%d-%s", i, shellPid); got != want {
			t.Fatalf("cycle %d: the session answered %q, want %q", i, got, want)
		}
		if out, err := ssh(fmt.Sprintf("echo new%d", i)).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != fmt.Sprintf("new%d", i) {
			t.Fatalf("cycle %d: a new ssh connection: %v: %s\n%s", i, err, out, tail(srv.out, 20))
		}
	}
}

// TestReal_JVM: a JVM (tests/progs/Heap.java) holding 300 MiB of filled
// heap in a 512 MiB heap, with 20 counting threads beside the JVM's own
// (GC, compiler, ...), dumped and restored twice; then it checks its heap
// and its threads from inside and runs a full GC.
func TestReal_JVM(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "java", "javac")
	classes := t.TempDir()
	src := filepath.Join(testutil.RepoRoot(), "tests", "progs", "Heap.java")
	if out, err := exec.Command("javac", "-d", classes, src).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v: %s", err, out)
	}
	work := t.TempDir()
	jvm := startDaemon(t, "", "jvm", "java", "-Xms512m", "-Xmx512m", "-cp", classes, "Heap", work, "300")
	if err := waitFile(filepath.Join(work, "ready"), 60*time.Second, nil); err != nil {
		t.Fatalf("the JVM is not ready: %v\n%s", err, tail(jvm.out, 20))
	}
	tids, err := listTids(jvm.pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(tids) < 30 {
		t.Fatalf("the JVM has %d threads, want 30 or more", len(tids))
	}
	for i := 0; i < 2; i++ {
		jvm.cycle(t, i, nil)
	}
	if err := os.WriteFile(filepath.Join(work, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := waitFile(filepath.Join(work, "result"), 60*time.Second, nil); err != nil {
		t.Fatalf("the restored JVM gives no result: %v\n%s", err, tail(jvm.out, 20))
	}
	if res, _ := os.ReadFile(filepath.Join(work, "result")); strings.TrimSpace(string(res)) != "PASS" {
		t.Fatalf("the restored JVM: %s\n%s", res, tail(jvm.out, 20))
	}
}

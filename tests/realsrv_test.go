package tests

// Real servers checkpointed and restored twice, as a user runs them: sshd
// with a live ssh session (its per-connection processes and their
// socketpairs whose other ends were closed), and a JVM with a few hundred
// MiB of heap and 20+ threads. Each is checked from inside (the session's
// shell answers with its own pid, the JVM checks its heap and threads).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	sess := startLineClient(t, ssh(`while read l; do echo "got-$l-$$"; done`), false)
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
// (GC, compiler, ...), dumped (with --file-locks) and restored twice: the
// flock of its hsperfdata file, held only through its mapping, is held
// again after each restore; then it checks its heap and its threads from
// inside and runs a full GC.
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
	// the hsperfdata file (/tmp/hsperfdata_<user>/<pid>): flock'ed,
	// mapped, its fd closed: the lock lives in the mapping only
	locks := heldLocks(t, jvm.pid)
	if !slices.ContainsFunc(locks, func(l string) bool { return strings.HasPrefix(l, "FLOCK ADVISORY WRITE ") }) {
		t.Fatalf("the JVM holds no flock (its hsperfdata file's): %q", locks)
	}
	for i := 0; i < 2; i++ {
		jvm.cycle(t, i, nil, "--file-locks")
		if got := heldLocks(t, jvm.pid); strings.Join(got, "\n") != strings.Join(locks, "\n") {
			t.Fatalf("cycle %d: file locks held by the JVM:\n%s\nbefore the dumps:\n%s", i, strings.Join(got, "\n"), strings.Join(locks, "\n"))
		}
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

// TestReal_MariaDB: mariadbd with InnoDB (its O_TMPFILE temp files and
// POSIX locks on its data files) and a client (not in the dump) connected
// over TCP with a temporary table of its session, dumped with
// --tcp-established --file-locks and restored twice: the same connection
// (same CONNECTION_ID) sees its table and temporary table and can write,
// a new connection works, and the server holds its file locks again.
// io_uring is off (--innodb-use-native-aio=0): neither ctr-cr nor CRIU
// carries an io_uring instance.
func TestReal_MariaDB(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "mariadb-install-db", "mariadb", "nft", "ip", "nsenter")
	mariadbd := "/usr/sbin/mariadbd"
	if _, err := os.Stat(mariadbd); err != nil {
		t.Fatalf("mariadbd (mariadb-server) is needed: %v", err)
	}
	dir := t.TempDir()
	data, tmp := filepath.Join(dir, "data"), filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mariadb-install-db", "--no-defaults", "--datadir="+data, "--user=root",
		"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v: %s", err, out)
	}
	ns := testutil.NewNetns(t)
	srv := startDaemon(t, ns, "mariadbd", mariadbd, "--no-defaults", "--datadir="+data, "--tmpdir="+tmp,
		"--socket="+filepath.Join(dir, "sock"), "--port=13306", "--bind-address=127.0.0.1", "--user=root",
		"--skip-grant-tables", "--innodb-use-native-aio=0", "--innodb-buffer-pool-size=64M")
	client := func(args ...string) *exec.Cmd {
		argv := testutil.InNetns(ns, append([]string{"mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", "13306", "-u", "root", "-N", "-B"}, args...)...)
		return exec.Command(argv[0], argv[1:]...)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := client("-e", "SELECT 'up'").CombinedOutput()
		if err == nil && strings.TrimSpace(string(out)) == "up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mariadbd does not answer: %v: %s\n%s", err, out, tail(srv.out, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}

	sql := startLineClient(t, client("-n"), true) // -n: one answer line per statement, at once
	expect := func(when, stmt, want string) {
		t.Helper()
		if got := sql.do(t, stmt); got != want {
			t.Fatalf("%s: %s: got %q, want %q\n%s", when, stmt, got, want, tail(srv.out, 20))
		}
	}
	id := sql.do(t, "SELECT CONNECTION_ID();")
	expect("setup", "CREATE DATABASE cr; USE cr; CREATE TABLE k (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB; "+
		"INSERT INTO k SELECT seq, CONCAT('value-', seq * 7) FROM seq_1_to_20000; SELECT 'ok';", "ok")
	expect("setup", "CREATE TEMPORARY TABLE scratch (x INT) ENGINE=InnoDB; INSERT INTO scratch SELECT seq FROM seq_1_to_1000; SELECT 'ok';", "ok")
	expect("setup", "START TRANSACTION; UPDATE k SET v = 'in-flight' WHERE id = 1; SELECT v FROM k WHERE id = 1;", "in-flight")
	locks := heldLocks(t, srv.pid)
	if len(locks) == 0 {
		t.Fatalf("mariadbd holds no file lock (/proc/locks)")
	}
	rows, sum := 1000, 500500 // of scratch: each cycle inserts one more row
	for i := 0; i < 2; i++ {
		srv.cycle(t, i, nil, "--tcp-established", "--file-locks")
		when := fmt.Sprintf("cycle %d", i)
		expect(when, "SELECT CONNECTION_ID();", id)
		expect(when, "SELECT COUNT(*), SUM(id) FROM k;", "20000\t200010000")
		expect(when, "SELECT v FROM k WHERE id = 20000;", "value-140000")
		expect(when, "SELECT COUNT(*), SUM(x) FROM scratch;", fmt.Sprintf("%d\t%d", rows, sum))
		expect(when, "SELECT v FROM k WHERE id = 1;", "in-flight")
		expect(when, fmt.Sprintf("INSERT INTO scratch VALUES (%d); SELECT COUNT(*) FROM scratch;", 5000+i), strconv.Itoa(rows+1))
		rows, sum = rows+1, sum+5000+i
		if out, err := client("-e", "SELECT v FROM cr.k WHERE id = 1").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "value-7" {
			t.Fatalf("%s: a new connection: %v: %q (the open transaction's change must not show)", when, err, out)
		}
		// the unix listener (SO_REUSEADDR set: carried) takes connections
		argv := testutil.InNetns(ns, "mariadb", "--no-defaults", "--socket="+filepath.Join(dir, "sock"), "-u", "root", "-N", "-B", "-e", "SELECT 'unix'")
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "unix" {
			t.Fatalf("%s: a connection on the unix socket: %v: %q", when, err, out)
		}
		if got := heldLocks(t, srv.pid); strings.Join(got, "\n") != strings.Join(locks, "\n") {
			t.Fatalf("%s: file locks held by mariadbd:\n%s\nbefore the dumps:\n%s", when, strings.Join(got, "\n"), strings.Join(locks, "\n"))
		}
	}
	expect("end", "COMMIT; SELECT v FROM k WHERE id = 1;", "in-flight")
}

// heldLocks lists the file locks of /proc/locks held by pid, as
// "CLASS MODE TYPE DEV:INODE START END" sorted (the inode is the file's,
// unchanged by a restore; the lock's ordinal number is dropped).
func heldLocks(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 8 || f[1] == "->" || f[4] != strconv.Itoa(pid) {
			continue
		}
		out = append(out, strings.Join(append(f[1:4:4], f[5:]...), " "))
	}
	slices.Sort(out)
	return out
}

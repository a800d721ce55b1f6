package tests

// Real network programs checkpointed and restored, checked from outside:
// a TCP stream with one end in the dump, python3 -m http.server, and
// redis-server with a redis-cli connected across the restore. Each runs
// in a network namespace of its own.

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// daemon is a program a test started in a network namespace, in its own
// session, with stdout and stderr in a file.
type daemon struct {
	pid   int
	netns string
	out   string
}

// startDaemon starts argv in netns (setsid, stdin /dev/null) and registers
// its cleanup: the process and its descendants are killed and reaped.
func startDaemon(t *testing.T, netns, name string, argv ...string) *daemon {
	t.Helper()
	argv = testutil.InNetns(netns, argv...)
	path, err := exec.LookPath(argv[0])
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	out := filepath.Join(t.TempDir(), name+".out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{null.Fd(), f.Fd(), f.Fd()},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	d := &daemon{pid: pid, netns: netns, out: out}
	t.Cleanup(func() { d.stop() })
	t.Logf("%s: pid %d", name, pid)
	return d
}

// stop kills the daemon and every descendant, and reaps them.
func (d *daemon) stop() {
	pids := append([]int{d.pid}, descendants(d.pid)...)
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
	reapTree(pids, 10*time.Second)
}

// cycle dumps the daemon's tree (from our network namespace) with args,
// checks it is gone, runs between (if any) while it exists only as an
// image, and restores it detached into its namespace.
func (d *daemon) cycle(t *testing.T, i int, between func(img string), args ...string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), fmt.Sprintf("img%d", i))
	if err := os.Mkdir(img, 0o755); err != nil {
		t.Fatal(err)
	}
	tids, err := listTids(d.pid)
	if err != nil {
		t.Fatalf("cycle %d: %v", i, err)
	}
	desc := descendants(d.pid)
	if _, stderr, err := ctrcr(t, append([]string{"dump", "-t", strconv.Itoa(d.pid), "-D", img}, args...)...); err != nil {
		t.Fatalf("cycle %d: dump: %v\n%s\n--- output ---\n%s", i, err, stderr, tail(d.out, 20))
	}
	if err := waitGone(d.pid, goneTimeout); err != nil {
		t.Fatalf("cycle %d: after dump: %v", i, err)
	}
	if err := reapTree(desc, goneTimeout); err != nil {
		t.Fatalf("cycle %d: after dump: %v", i, err)
	}
	if between != nil {
		between(img)
	}
	if _, stderr, err := ctrcrIn(t, d.netns, "restore", "-D", img, "-d"); err != nil {
		t.Fatalf("cycle %d: restore: %v\n%s", i, err, stderr)
	}
	if err := waitBack(d.pid, tids, backTimeout, nil); err != nil {
		t.Fatalf("cycle %d: after restore: %v", i, err)
	}
	return img
}

// progress reads a tcpstream.py progress file: bytes verified so far.
func progress(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	s := strings.TrimSpace(string(b))
	if strings.HasPrefix(s, "ERROR") {
		t.Fatalf("%s: %s", filepath.Base(path), s)
	}
	n, _ := strconv.ParseInt(strings.TrimPrefix(s, "bytes "), 10, 64)
	return n
}

// waitProgress waits until the progress file shows more than n bytes.
func waitProgress(t *testing.T, path string, n int64, what string) int64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if p := progress(t, path); p > n {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s stuck at %d bytes (want more than %d)", what, filepath.Base(path), progress(t, path), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReal_TCPStream: a client inside the dump streams with a server
// outside it (tests/progs/tcpstream.py: every byte checked, echoed back and
// checked again). Dumped with --tcp-established and restored twice, the
// connection goes on: the server never sees a reset or an end of file
// (the lock table exists while the client is an image, and is gone after
// the restore), and both sides keep verifying the stream.
func TestReal_TCPStream(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "python3", "nft", "ip", "nsenter")
	ns := testutil.NewNetns(t)
	dir := t.TempDir()
	prog := filepath.Join(testutil.RepoRoot(), "tests", "progs", "tcpstream.py")
	startDaemon(t, ns, "server", "python3", prog, "server", dir)
	if err := waitFile(filepath.Join(dir, "port"), 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	client := startDaemon(t, ns, "client", "python3", prog, "client", dir)
	sp, cp := filepath.Join(dir, "server.progress"), filepath.Join(dir, "client.progress")
	waitProgress(t, cp, 256<<10, "before the dumps")
	for i := 0; i < 2; i++ {
		before := progress(t, sp)
		client.cycle(t, i, func(string) {
			if n := lockTables(t, ns); len(n) != 1 {
				t.Errorf("cycle %d: lock tables while dumped: %v (want one)", i, n)
			}
			time.Sleep(300 * time.Millisecond) // the server keeps sending into the lock
			progress(t, sp)                    // no error on the server's side
		}, "--tcp-established")
		if n := lockTables(t, ns); len(n) != 0 {
			t.Errorf("cycle %d: lock tables after restore: %v", i, n)
		}
		c := waitProgress(t, cp, progress(t, cp)+128<<10, fmt.Sprintf("cycle %d: client", i))
		s := waitProgress(t, sp, before+128<<10, fmt.Sprintf("cycle %d: server", i))
		t.Logf("cycle %d: client verified %d bytes, server %d", i, c, s)
	}
}

// httpGet fetches url from inside netns (python3 urllib) and returns the
// body.
func httpGet(t *testing.T, netns, url string) (string, error) {
	t.Helper()
	argv := testutil.InNetns(netns, "python3", "-c",
		"import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())", url)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	return string(out), err
}

// TestReal_HTTPServer: python3 -m http.server answers requests after being
// dumped and restored twice (its listener comes back on the same port).
func TestReal_HTTPServer(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "python3", "ip", "nsenter")
	ns := testutil.NewNetns(t)
	www := t.TempDir()
	if err := os.WriteFile(filepath.Join(www, "hello.txt"), []byte("hello from before the checkpoint\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := startDaemon(t, ns, "http", "python3", "-m", "http.server", "18080", "--bind", "127.0.0.1", "--directory", www)
	url := "http://127.0.0.1:18080/hello.txt"
	deadline := time.Now().Add(15 * time.Second)
	for {
		body, err := httpGet(t, ns, url)
		if err == nil && body == "hello from before the checkpoint\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("http.server does not answer: %v: %s\n%s", err, body, tail(srv.out, 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < 2; i++ {
		srv.cycle(t, i, nil)
		name := fmt.Sprintf("after%d.txt", i)
		want := fmt.Sprintf("written after restore %d\n", i)
		if err := os.WriteFile(filepath.Join(www, name), []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, c := range [][2]string{{"hello.txt", "hello from before the checkpoint\n"}, {name, want}} {
			body, err := httpGet(t, ns, "http://127.0.0.1:18080/"+c[0])
			if err != nil || body != c[1] {
				t.Fatalf("cycle %d: GET %s: %v: %q, want %q\n%s", i, c[0], err, body, c[1], tail(srv.out, 10))
			}
		}
	}
}

// lineClient is a client process (redis-cli, ssh, mariadb) reading
// commands from a pipe and answering each with one line: one connection
// for its whole life (a reconnection would show, e.g. as a new CLIENT ID).
// startLineClient starts cmd with its stdin and stdout as the client's
// pipes (stderr too with errToOut) and registers its end.
func startLineClient(t *testing.T, cmd *exec.Cmd, errToOut bool) *lineClient {
	t.Helper()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if errToOut {
		cmd.Stderr = cmd.Stdout
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return &lineClient{in: in, out: bufio.NewReader(stdout)}
}

type lineClient struct {
	in  io.WriteCloser
	out *bufio.Reader
}

func (c *lineClient) do(t *testing.T, cmd string) string {
	t.Helper()
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		t.Fatalf("client: %s: %v", cmd, err)
	}
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		l, err := c.out.ReadString('\n')
		ch <- res{strings.TrimSpace(l), err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("client: %s: %v", cmd, r.err)
		}
		return r.line
	case <-time.After(20 * time.Second):
		t.Fatalf("client: %s: no answer in 20 s", cmd)
	}
	return ""
}

// TestReal_Redis: redis-server holding 100k keys is dumped with
// --tcp-established and restored twice while a redis-cli (not in the dump)
// stays connected: after each restore the same connection (same CLIENT
// ID) sees every key and can write.
func TestReal_Redis(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "redis-server", "redis-cli", "nft", "ip", "nsenter")
	ns := testutil.NewNetns(t)
	dir := t.TempDir()
	srv := startDaemon(t, ns, "redis", "redis-server", "--port", "16379", "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--protected-mode", "no")
	cli := func(args ...string) (string, error) {
		argv := testutil.InNetns(ns, append([]string{"redis-cli", "-p", "16379"}, args...)...)
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if out, err := cli("PING"); err == nil && out == "PONG" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server does not answer:\n%s", tail(srv.out, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// 100k keys through one pipelined connection
	var cmds strings.Builder
	for i := 0; i < 100000; i++ {
		fmt.Fprintf(&cmds, "SET key:%d value-%d\n", i, i*7)
	}
	argv := testutil.InNetns(ns, "redis-cli", "-p", "16379", "--pipe")
	load := exec.Command(argv[0], argv[1:]...)
	load.Stdin = strings.NewReader(cmds.String())
	if out, err := load.CombinedOutput(); err != nil || !strings.Contains(string(out), "errors: 0, replies: 100000") {
		t.Fatalf("loading keys: %v: %s", err, out)
	}

	// the client that stays connected
	argv = testutil.InNetns(ns, "redis-cli", "-p", "16379")
	rc := startLineClient(t, exec.Command(argv[0], argv[1:]...), false)
	id := rc.do(t, "CLIENT ID")
	if rc.do(t, "SET before restore") != "OK" {
		t.Fatal("SET before")
	}
	for i := 0; i < 2; i++ {
		srv.cycle(t, i, nil, "--tcp-established")
		if n := lockTables(t, ns); len(n) != 0 {
			t.Errorf("cycle %d: lock tables after restore: %v", i, n)
		}
		if got := rc.do(t, "CLIENT ID"); got != id {
			t.Fatalf("cycle %d: redis-cli reconnected: CLIENT ID %s, was %s", i, got, id)
		}
		if got := rc.do(t, "DBSIZE"); got != strconv.Itoa(100001+i) {
			t.Fatalf("cycle %d: DBSIZE %s, want %d", i, got, 100001+i)
		}
		if got := rc.do(t, "GET key:99999"); got != "value-699993" {
			t.Fatalf("cycle %d: GET key:99999 = %q", i, got)
		}
		if got := rc.do(t, "GET before"); got != "restore" {
			t.Fatalf("cycle %d: GET before = %q", i, got)
		}
		if got := rc.do(t, fmt.Sprintf("SET after:%d yes", i)); got != "OK" {
			t.Fatalf("cycle %d: SET after restore: %q", i, got)
		}
	}
	if got := rc.do(t, "CLIENT ID"); got != id {
		t.Fatalf("redis-cli reconnected: CLIENT ID %s, was %s", got, id)
	}
}

package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// extServer serves an abstract unix stream name outside the dumped case:
// every connection gets "reply" once it has sent "again". The name goes to
// the case in $CTRCR_EXT_SK.
type extServer struct {
	name  string
	l     *net.UnixListener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns int
}

func startExtServer(t *testing.T) *extServer {
	t.Helper()
	s := &extServer{name: fmt.Sprintf("@ctrcr-ext-%d-%s", os.Getpid(), strings.NewReplacer("/", "_").Replace(t.Name()))}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.name, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	s.l = l
	t.Setenv("CTRCR_EXT_SK", s.name)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				var got []byte
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					got = append(got, buf[:n]...)
					if strings.Contains(string(got), "again") {
						c.Write([]byte("reply"))
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); s.wg.Wait() })
	return s
}

func (s *extServer) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// TestNegative_UnixExternalPeer: a unix socket connected to a listener
// outside the dump is refused, naming the fd, the socket, the peer's name
// and --ext-unix-sk; the process runs on and its connection still works.
func TestNegative_UnixExternalPeer(t *testing.T) {
	testutil.RequiresRoot(t)
	startExtServer(t)
	if noCR {
		runCase(t, Case{Name: "e_unix_ext", Src: "e_unix_ext.c"})
		t.Skip("CTRCR_NOCR=1: case program checked, ctr-cr part skipped")
	}
	r := startCase(t, Case{Name: "e_unix_ext", Src: "e_unix_ext.c"})
	start := procStartTime(t, r.Pid)
	img := filepath.Join(t.TempDir(), "img")
	if err := os.Mkdir(img, 0o755); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img)
	requireExitCode(t, err, stderr, 1)
	requireNoPanic(t, stderr)
	for _, re := range []string{`pid \d+: fd 40\b`, `socket:\[\d+\]`, `outside the dump`, `"@ctrcr-ext-`, `--ext-unix-sk`} {
		if !regexp.MustCompile(re).MatchString(stderr) {
			t.Errorf("dump error does not match %q:\n%s", re, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
		t.Errorf("failed dump left a complete-looking image (%s/inventory.img)", img)
	}
	requireRunningUntraced(t, r.Pid)
	if st := procStartTime(t, r.Pid); st != start {
		t.Fatalf("pid %d is another process now (start time %s, was %s)", r.Pid, st, start)
	}
	finishChild(t, r)
}

// TestCR_UnixExternalPeer: with --ext-unix-sk the socket connects to the
// outside listener's name again on each restore, and the case gets its
// reply over it.
func TestCR_UnixExternalPeer(t *testing.T) {
	s := startExtServer(t)
	runCase(t, Case{Name: "e_unix_ext", Src: "e_unix_ext.c", DumpArgs: []string{"--ext-unix-sk"}})
	if want := 1 + defaultCycles; !noCR && s.connections() != want {
		t.Errorf("the outside listener got %d connections, want %d (one per restore)", s.connections(), want)
	}
}

// TestCR_UnixInheritFd: a unix stream socket whose peer outside the dump
// has no name (the other end of a socketpair the test holds) is dumped with
// --ext-unix-sk and restored twice with --inherit-fd fd[3]:socket:[INO]
// onto a fresh pair; the program talks over the handed-in socket (checked
// from inside: still a connected unix stream socket, same flags) and the
// data it sent before the dump stays in the first pair.
func TestCR_UnixInheritFd(t *testing.T) {
	r := runCase(t, Case{Name: "e_unix_inherit", Src: "e_unix_inherit.c", ExtSock: true,
		DumpArgs: []string{"--ext-unix-sk"},
		Verify: func(t *testing.T, r *Run) {
			last := r.ExtSocks[len(r.ExtSocks)-1]
			if _, err := unix.Write(last, []byte("ping\n")); err != nil {
				t.Fatalf("send ping: %v", err)
			}
		}})
	if len(r.ExtSocks) < 3 {
		t.Fatalf("%d socketpairs used, want the first and one per restore", len(r.ExtSocks))
	}
	readSock := func(fd int) string {
		unix.Shutdown(fd, unix.SHUT_WR)
		return string(readAll(t, fd))
	}
	if got := readSock(r.ExtSocks[0]); got != "hello 0\n" {
		t.Errorf("first pair holds %q, want \"hello 0\\n\"", got)
	}
	for _, fd := range r.ExtSocks[1 : len(r.ExtSocks)-1] {
		if got := readSock(fd); got != "" {
			t.Errorf("an intermediate pair holds %q, want nothing", got)
		}
	}
	if got := readSock(r.ExtSocks[len(r.ExtSocks)-1]); got != "hello 1\npong\n" {
		t.Errorf("last pair holds %q, want \"hello 1\\npong\\n\"", got)
	}
}

// TestCR_UnixInheritFdMissing: the image of a program whose unix peer
// outside the dump had no name is refused by a restore without
// --inherit-fd, naming the socket and the option; show names the key; a
// dump without --ext-unix-sk is refused naming both options.
func TestCR_UnixInheritFdMissing(t *testing.T) {
	r := startCase(t, Case{Name: "e_unix_inherit", Src: "e_unix_inherit.c", ExtSock: true})
	img := filepath.Join(r.imgBase, "img0")
	key := fmt.Sprintf("socket:[%d]", r.extIno)
	_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img+"-refused")
	if err == nil || !strings.Contains(stderr, "--ext-unix-sk") || !strings.Contains(stderr, "--inherit-fd fd[N]:"+key) {
		t.Fatalf("dump without --ext-unix-sk: %v\n%s", err, stderr)
	}
	if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--ext-unix-sk"); err != nil {
		r.fatalf(stderr, "dump: %v", err)
	}
	if err := waitGone(r.Pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
	r.reaped = true
	out, stderr, err := ctrcr(t, "show", img)
	if err != nil || !strings.Contains(out, "--inherit-fd fd[N]:"+key) {
		t.Errorf("show does not name --inherit-fd fd[N]:%s: %v %s\n%s", key, err, stderr, out)
	}
	_, stderr, err = ctrcr(t, "restore", "-D", img, "-d")
	if err == nil || !strings.Contains(stderr, "--inherit-fd fd[N]:"+key) {
		t.Fatalf("restore without --inherit-fd: %v\n%s", err, stderr)
	}
	if err := unix.Kill(r.Pid, 0); err != unix.ESRCH {
		t.Errorf("pid %d exists after the failed restore (%v)", r.Pid, err)
	}
	// a pipe handed in for the socket is refused too
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	w := os.NewFile(uintptr(p[1]), "pipe-w")
	defer w.Close()
	_, stderr, err = ctrcrFiles(t, "", []*os.File{w}, "restore", "-D", img, "-d", "--inherit-fd", "fd[3]:"+key)
	if err == nil || !strings.Contains(stderr, "is not a socket") {
		t.Fatalf("restore with a pipe for the socket: %v\n%s", err, stderr)
	}
}

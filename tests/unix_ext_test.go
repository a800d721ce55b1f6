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

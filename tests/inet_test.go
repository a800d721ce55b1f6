package tests

// Inet sockets that are not established connections (core/inetsk): TCP
// listeners on IPv4 and IPv6, a bound UDP socket and an unbound TCP socket
// survive C/R; an established TCP connection is refused.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestCR_Inet: see tests/cases/e_inet.c; from outside, ctr-cr show names
// the listeners with their addresses and state.
func TestCR_Inet(t *testing.T) {
	runCase(t, Case{
		Name: "e_inet",
		Src:  "e_inet.c",
		Verify: func(t *testing.T, w *Run) {
			if len(w.Images) == 0 {
				return // CTRCR_NOCR
			}
			out, stderr, err := ctrcr(t, "show", w.Images[len(w.Images)-1])
			if err != nil {
				t.Fatalf("show: %v\n%s", err, stderr)
			}
			for _, re := range []string{
				`\b50 inet .* tcp 127\.0\.0\.1:\d+ LISTEN backlog 9`,
				`\b51 inet .* tcp6 \[::1\]:\d+ LISTEN backlog 3`,
				`\b52 inet .* udp 127\.0\.0\.1:\d+ unconnected`,
				`\b53 inet .* tcp 0\.0\.0\.0:0 unconnected`,
			} {
				if !regexp.MustCompile(re).MatchString(out) {
					t.Errorf("ctr-cr show has no line matching %q:\n%s", re, out)
				}
			}
		},
	})
}

// Fds of the established connection in e_inet_est.c.
const inetEstClient, inetEstServer = 60, 61

// TestNegative_InetEstablished: dumping a process that holds both ends of
// an established TCP connection fails naming the fd and "established",
// and the process keeps running with its connection working.
func TestNegative_InetEstablished(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		runCase(t, Case{Name: "e_inet_est", Src: "e_inet_est.c"})
		t.Skip("CTRCR_NOCR=1: case program checked, ctr-cr part skipped")
	}
	r := startCase(t, Case{Name: "e_inet_est", Src: "e_inet_est.c"})
	start := procStartTime(t, r.Pid)
	img := filepath.Join(t.TempDir(), "img")
	if err := os.Mkdir(img, 0o755); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img)
	requireExitCode(t, err, stderr, 1)
	requireNoPanic(t, stderr)
	fdRe := regexp.MustCompile(fmt.Sprintf(`\bfd\W{0,3}(%d|%d)\b`, inetEstClient, inetEstServer))
	if !fdRe.MatchString(stderr) || !strings.Contains(stderr, "established") {
		t.Errorf("dump error does not name fd %d/%d and \"established\":\n%s", inetEstClient, inetEstServer, stderr)
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

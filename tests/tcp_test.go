package tests

// Established TCP connections (--tcp-established): TCP_REPAIR and the
// network lock (core/inetsk, core/netlock).

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// lockTables lists the ctr-cr network lock tables in the network
// namespace at netns.
func lockTables(t *testing.T, netns string) []string {
	t.Helper()
	argv := testutil.InNetns(netns, "nft", "list", "tables")
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v: %s", err, out)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 3 && strings.HasPrefix(f[2], "ctrcr_lock_") {
			names = append(names, f[2])
		}
	}
	return names
}

// TestCR_TCPEstablished: see tests/cases/e_tcp_est.c (queues in flight,
// unsent and unread, options, IPv6 half-closed connection). From outside:
// show names the connections with their queues, and no lock table is
// left in the case's network namespace.
func TestCR_TCPEstablished(t *testing.T) {
	runCase(t, Case{
		Name:     "e_tcp_est",
		Src:      "e_tcp_est.c",
		NetNS:    true,
		DumpArgs: []string{"--tcp-established"},
		Verify: func(t *testing.T, w *Run) {
			if len(w.Images) == 0 {
				return // CTRCR_NOCR
			}
			if n := lockTables(t, w.NetNS); len(n) != 0 {
				t.Errorf("lock tables left after restore: %v", n)
			}
			// the first image: a restored half-closed connection shows as
			// ESTABLISHED with reading shut down, and its FIN as not yet
			// acknowledged until the peer answers a retransmission
			out, stderr, err := ctrcr(t, "show", w.Images[0])
			if err != nil {
				t.Fatalf("show: %v\n%s", err, stderr)
			}
			for _, re := range []string{
				`\b60 inet .* tcp 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+ ESTABLISHED sendq [1-9]\d* \(unsent [1-9]\d*\) recvq 12\b`,
				`\b61 inet .* tcp 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+ ESTABLISHED sendq 0 \(unsent 0\) recvq [1-9]`,
				`\b62 inet .* tcp6 \[::1\]:\d+ -> \[::1\]:\d+ FIN_WAIT2 `,
				`\b63 inet .* tcp6 \[::1\]:\d+ -> \[::1\]:\d+ CLOSE_WAIT sendq 0 \(unsent 0\) recvq 3\b`,
			} {
				if !regexp.MustCompile(re).MatchString(out) {
					t.Errorf("ctr-cr show has no line matching %q:\n%s", re, out)
				}
			}
		},
	})
}

// TestNegative_TCPDumpFails: with --tcp-established, a dump that fails
// after the connection was locked and put in repair mode (on an
// unsupported netlink socket) leaves the process running untraced, its
// connection working both ways with the queued data, and no lock table.
func TestNegative_TCPDumpFails(t *testing.T) {
	testutil.RequiresRoot(t)
	c := Case{Name: "e_inet_est_nl", Src: "e_inet_est.c", CFlags: []string{"-DWITH_NETLINK"}, NetNS: true}
	if noCR {
		runCase(t, c)
		t.Skip("CTRCR_NOCR=1: case program checked, ctr-cr part skipped")
	}
	r := startCase(t, c)
	img := filepath.Join(t.TempDir(), "img")
	if err := os.Mkdir(img, 0o755); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--tcp-established")
	requireExitCode(t, err, stderr, 1)
	requireNoPanic(t, stderr)
	if !strings.Contains(stderr, "fd 70") || !strings.Contains(stderr, "netlink") {
		t.Errorf("dump error does not name fd 70 (netlink):\n%s", stderr)
	}
	if n := lockTables(t, r.NetNS); len(n) != 0 {
		t.Errorf("failed dump left lock tables: %v", n)
	}
	requireRunningUntraced(t, r.Pid)
	finishChild(t, r)
}

// TestNegative_TCPRestoreFails: a restore that fails (a file of the image
// changed size) removes the dump's network lock and leaves no process.
func TestNegative_TCPRestoreFails(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1: nothing to check without ctr-cr")
	}
	r := startCase(t, Case{Name: "e_tcp_est", Src: "e_tcp_est.c", NetNS: true})
	img := filepath.Join(t.TempDir(), "img")
	if err := os.Mkdir(img, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--tcp-established"); err != nil {
		t.Fatalf("dump: %v\n%s", err, stderr)
	}
	if err := waitGone(r.Pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
	r.reaped = true
	if n := lockTables(t, r.NetNS); len(n) != 1 {
		t.Fatalf("lock tables after the dump: %v (want one)", n)
	}
	f, err := os.OpenFile(r.Out, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("grown\n")
	f.Close()
	_, stderr, err := ctrcrIn(t, r.NetNS, "restore", "-D", img, "-d")
	requireExitCode(t, err, stderr, 1)
	requireNoPanic(t, stderr)
	if n := lockTables(t, r.NetNS); len(n) != 0 {
		t.Errorf("failed restore left lock tables: %v\n%s", n, stderr)
	}
	if procState(r.Pid) != "" {
		t.Errorf("failed restore left pid %d (state %s)", r.Pid, procState(r.Pid))
	}
}

package tests

// CRIU's --skip-in-flight and --tcp-close (issue 11): LXC passes
// --skip-in-flight on every dump; --tcp-close gives TCP connections back
// closed. Checked from inside the restored cases.

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/netlock"
	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestCR_TCPInFlight: see tests/cases/e_tcp_inflight.c (a listener with a
// connection never accepted, dumped with --skip-in-flight).
func TestCR_TCPInFlight(t *testing.T) {
	if noCR {
		t.Skip("CTRCR_NOCR=1: the case checks what the dump drops")
	}
	runCase(t, Case{Name: "e_tcp_inflight", Src: "e_tcp_inflight.c", NetNS: true,
		DumpArgs: []string{"--skip-in-flight", "--tcp-established"}, RestoreArgs: []string{"--skip-in-flight"}})
}

// TestNegative_TCPInFlight: without --skip-in-flight the listener with a
// connection waiting to be accepted is refused naming its fd and the flag,
// and the case goes on unchanged (it then finds its connection still
// queued: the check after "go" is the same case's, so only the refusal and
// the running target are checked here).
func TestNegative_TCPInFlight(t *testing.T) {
	if noCR {
		t.Skip("CTRCR_NOCR=1: needs ctr-cr")
	}
	c := Case{Name: "e_tcp_inflight_refused", Src: "e_tcp_inflight.c", CFlags: []string{"-DREFUSED"}, NetNS: true}
	requireRefusedDump(t, c, func(t *testing.T, stderr string, _ int) {
		if !regexp.MustCompile(`\bfd\W{0,3}60\b`).MatchString(stderr) || !strings.Contains(stderr, "waiting to be accepted") || !strings.Contains(stderr, "--skip-in-flight") {
			t.Errorf("dump error does not name fd 60, the accept queue and --skip-in-flight:\n%s", stderr)
		}
	})
}

// TestCR_TCPClose: see tests/cases/e_tcp_close.c (connections dumped and
// restored with --tcp-close come back closed, and so do connections that
// ended before the dump, reset or finished). An image dumped with
// --tcp-close is refused by a restore without it, naming the flag.
func TestCR_TCPClose(t *testing.T) {
	if noCR {
		t.Skip("CTRCR_NOCR=1: the case checks what the restore closes")
	}
	runCase(t, Case{Name: "e_tcp_close", Src: "e_tcp_close.c", CFlags: []string{"-DENDED"}, NetNS: true,
		DumpArgs: []string{"--tcp-close"}, RestoreArgs: []string{"--tcp-close"},
		Verify: func(t *testing.T, r *Run) {
			_, stderr, err := ctrcrIn(t, r.NetNS, "restore", "-D", r.Images[0], "-d")
			requireExitCode(t, err, stderr, 1)
			if !strings.Contains(stderr, "restore needs --tcp-close") {
				t.Errorf("restore without --tcp-close of a --tcp-close image: %s", stderr)
			}
		}})
}

// TestCR_TCPCloseEstablished: an image dumped with --tcp-established
// (connections in repair mode, behind the network lock) restored with
// --tcp-close: the connections come back closed as in TestCR_TCPClose, and
// the dump's network lock is gone from the case's namespace.
func TestCR_TCPCloseEstablished(t *testing.T) {
	if noCR {
		t.Skip("CTRCR_NOCR=1: the case checks what the restore closes")
	}
	runCase(t, Case{Name: "e_tcp_close_est", Src: "e_tcp_close.c", NetNS: true,
		DumpArgs: []string{"--tcp-established"}, RestoreArgs: []string{"--tcp-close"},
		Verify: func(t *testing.T, r *Run) {
			out, err := exec.Command(testutil.InNetns(r.NetNS, "nft", "list", "tables")[0], testutil.InNetns(r.NetNS, "nft", "list", "tables")[1:]...).CombinedOutput()
			if err != nil || strings.Contains(string(out), netlock.Prefix) {
				t.Errorf("nft list tables in the case's namespace: %v: %s (the dump's lock should be gone)", err, out)
			}
		}})
}

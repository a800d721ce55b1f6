package tests

// Unix sockets (core/unixsk): every type bound, listening with connections
// waiting, connected, with data, credentials and fds in flight; a peer
// outside the dump is refused unless --ext-unix-sk.

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestCR_Unix: see tests/cases/e_unix.c; from outside, ctr-cr show names
// the unix sockets' key facts.
func TestCR_Unix(t *testing.T) {
	runCase(t, Case{
		Name: "e_unix",
		Src:  "e_unix.c",
		Verify: func(t *testing.T, w *Run) {
			if len(w.Images) == 0 {
				return // CTRCR_NOCR
			}
			out, stderr, err := ctrcr(t, "show", w.Images[len(w.Images)-1])
			if err != nil {
				t.Fatalf("show: %v\n%s", err, stderr)
			}
			for _, re := range []string{
				`\b40 unix .* stream LISTEN bound ".*/ls\.sock" backlog 8 waiting 2$`,
				`\b41 unix .* stream waiting on socket:\[\d+\] to ".*/ls\.sock" unaccepted 1 msg/17 bytes$`,
				`\b44 unix .* stream peer socket:\[\d+\] bound ".*/ls\.sock" queued 1 msg/6 bytes$`,
				`\b47 unix .* dgram unconnected bound "@ctrcr-dg-\d+" queued 3 msg/22 bytes$`,
				`\b50 unix .* dgram unconnected bound ".*/gone\.sock" \(deleted\) queued 1 msg/7 bytes$`,
				`\b56 unix .* dgram peer socket:\[\d+\] queued 1 msg/8 bytes creds 1$`,
				`\b53 unix .* stream peer socket:\[\d+\] queued 1 msg/3 bytes fds in flight 2`,
			} {
				if !regexp.MustCompile(`(?m)` + re).MatchString(out) {
					t.Errorf("ctr-cr show has no line matching %q:\n%s", re, out)
				}
			}
		},
	})
}

// TestNegative_UnixLeaveRunningEmbryo: reading the data of unaccepted
// connections means accepting them, so --leave-running refuses the dump
// naming the listener; nothing was taken: the case still finds both
// connections with their data.
func TestNegative_UnixLeaveRunningEmbryo(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1")
	}
	r := startCase(t, Case{Name: "e_unix", Src: "e_unix.c"})
	img := filepath.Join(t.TempDir(), "img")
	if err := os.Mkdir(img, 0o755); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--leave-running")
	requireExitCode(t, err, stderr, 1)
	requireNoPanic(t, stderr)
	for _, re := range []string{`pid \d+: fd 40\b`, `unaccepted connection`, `--leave-running`} {
		if !regexp.MustCompile(re).MatchString(stderr) {
			t.Errorf("dump error does not match %q:\n%s", re, stderr)
		}
	}
	requireRunningUntraced(t, r.Pid)
	finishChild(t, r)
}

// TestCR_UnixPeerGone: see tests/cases/e_unix_gone.c (sockets whose peer
// was closed: stream, seqpacket, dgram; pending ECONNRESET; accepted from
// or connected to a listener; dead dgram peers with a name).
func TestCR_UnixPeerGone(t *testing.T) {
	runCase(t, Case{Name: "e_unix_gone", Src: "e_unix_gone.c"})
}

// TestCR_UnixNames: see tests/cases/e_unix_names.c (deleted names stay
// deleted and read back the same).
func TestCR_UnixNames(t *testing.T) {
	runCase(t, Case{Name: "e_unix_names", Src: "e_unix_names.c"})
}

// TestCR_UnixOptions: see tests/cases/e_unix_opts.c (socket-level options
// of listener, accepted, dgram, seqpacket and stream pair sockets read
// back the same, the classic BPF filters still filter, the locked one
// stays locked).
func TestCR_UnixOptions(t *testing.T) {
	runCase(t, Case{
		Name: "e_unix_opts",
		Src:  "e_unix_opts.c",
		Verify: func(t *testing.T, w *Run) {
			if len(w.Images) == 0 {
				return // CTRCR_NOCR
			}
			out, stderr, err := ctrcr(t, "show", w.Images[len(w.Images)-1])
			if err != nil {
				t.Fatalf("show: %v\n%s", err, stderr)
			}
			for _, re := range []string{
				`stream LISTEN bound "ls\.sock" backlog 4 waiting 0 options SO_REUSEADDR=1,SO_KEEPALIVE=1,SO_RCVTIMEO=1.5s$`,
				`dgram unconnected bound "@ctrcr-uo-\d+" queued 1 msg/5 bytes options .*SO_TIMESTAMP=1.*SO_ATTACH_FILTER=4 insns$`,
				`seqpacket peer socket:\[\d+\] queued 1 msg/4 bytes options SO_OOBINLINE=1,SO_ATTACH_FILTER=4 insns,SO_LOCK_FILTER=1$`,
			} {
				if !regexp.MustCompile(`(?m)` + re).MatchString(out) {
					t.Errorf("ctr-cr show has no line matching %q:\n%s", re, out)
				}
			}
		},
	})
}

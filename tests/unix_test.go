package tests

// Unix sockets (core/unixsk): every type bound, listening with connections
// waiting, connected, with data, credentials and fds in flight; a peer
// outside the dump is refused unless --ext-unix-sk.

import (
	"regexp"
	"testing"
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

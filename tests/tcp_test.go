package tests

// Established TCP connections (--tcp-established): TCP_REPAIR and the
// network lock (core/inetsk, core/netlock).

import (
	"os/exec"
	"regexp"
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

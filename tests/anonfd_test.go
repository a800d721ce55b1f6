package tests

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestCR_AnonFds: timerfds (periodic, one-shot, with pending expirations,
// absolute on CLOCK_REALTIME and CLOCK_MONOTONIC), a signalfd with a
// pending signal and an inotify instance with a gap in its wds, dumped and
// restored twice; the case checks them from inside. From outside, show
// tells the inotify watches and that the event queued before the first
// dump is lost.
func TestCR_AnonFds(t *testing.T) {
	runCase(t, Case{Name: "AnonFds", Src: "e_anonfds.c", Verify: func(t *testing.T, r *Run) {
		if noCR {
			return
		}
		out, stderr, err := ctrcr(t, "show", r.Images[0])
		if err != nil {
			t.Fatalf("show: %v\n%s", err, stderr)
		}
		for _, want := range []string{
			"timerfd", "signalfd", "sigmask 0x200",
			"3 watch(es) [1=" + r.Dir + " mask 0x300, 2=" + filepath.Join(r.Dir, "sub1") + " mask 0x300, 4=" + filepath.Join(r.Dir, "sub3") + " mask 0x100]",
			"events queued at dump are lost",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("show %s lacks %q:\n%s", r.Images[0], want, out)
			}
		}
	}})
}

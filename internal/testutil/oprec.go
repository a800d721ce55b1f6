package testutil

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// OpRecordOfLive reports whether a ctr-cr operation record's file name
// (PID-START.json under /run/ctr-cr/ops) names a live process with that
// start time: another ctr-cr's operation under way (another test binary,
// a user's ctr-cr on a shared host), not a leftover a test should flag.
func OpRecordOfLive(name string) bool {
	var pid int
	var start uint64
	if _, err := fmt.Sscanf(strings.TrimSuffix(name, ".json"), "%d-%d", &pid, &start); err != nil {
		return false
	}
	st, err := procfs.ReadStat(pid)
	return err == nil && st.StartTime == start && st.State != 'Z'
}

// RequireNoOpRecords fails the test (without stopping it) for each
// operation record of a dead ctr-cr left under /run/ctr-cr/ops; a record
// of a live one is another operation under way (another test binary, a
// user's ctr-cr on a shared host).
func RequireNoOpRecords(t testing.TB) {
	t.Helper()
	ents, _ := os.ReadDir("/run/ctr-cr/ops")
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".json") && !OpRecordOfLive(e.Name()) {
			t.Errorf("operation record left: /run/ctr-cr/ops/%s", e.Name())
		}
	}
}

package tests

import (
	"encoding/json"
	"strings"
	"testing"
)

// statsLine finds the --print-stats JSON object in a command's output.
func statsLine(t *testing.T, what, stdout string) map[string]any {
	t.Helper()
	for _, l := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(l, "{") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("%s: stats %q: %v", what, l, err)
			}
			return m
		}
	}
	t.Fatalf("%s: no stats JSON in its output:\n%s", what, stdout)
	return nil
}

// TestCR_PrintStats: dump and restore --print-stats give every phase's
// time, the pages and the ptrace round trips (injected syscalls), and the
// restore makes most of its syscalls in batches inside the task; a
// multi-threaded case with handlers and timers runs on correctly after
// two cycles.
func TestCR_PrintStats(t *testing.T) {
	num := func(t *testing.T, m map[string]any, k string) float64 {
		t.Helper()
		v, ok := m[k].(float64)
		if !ok {
			t.Fatalf("stats: no number %q in %v", k, m)
		}
		return v
	}
	runCase(t, Case{
		Name: "PrintStats", Src: "a_timers.c",
		DumpArgs:    []string{"--print-stats"},
		RestoreArgs: []string{"--print-stats"},
		AfterDump: func(t *testing.T, cycle int, stdout string) {
			m := statsLine(t, "dump", stdout)
			for _, k := range []string{"freezing_ms", "frozen_ms", "collect_ms", "memdump_ms", "write_ms", "total_ms"} {
				if num(t, m, k) < 0 {
					t.Errorf("dump %s = %v", k, m[k])
				}
			}
			if num(t, m, "pages_written") <= 0 || num(t, m, "pages_scanned") < num(t, m, "pages_written") {
				t.Errorf("dump pages: scanned %v written %v", m["pages_scanned"], m["pages_written"])
			}
			if num(t, m, "injected_syscalls") <= 0 || num(t, m, "threads") < 2 {
				t.Errorf("dump: injected %v, threads %v", m["injected_syscalls"], m["threads"])
			}
		},
		AfterRestore: func(t *testing.T, cycle int, stdout string) {
			m := statsLine(t, "restore", stdout)
			for _, k := range []string{"validate_ms", "forking_ms", "memory_ms", "restore_ms", "total_ms"} {
				if num(t, m, k) < 0 {
					t.Errorf("restore %s = %v", k, m[k])
				}
			}
			if num(t, m, "pages_restored") <= 0 {
				t.Errorf("restore pages_restored %v", m["pages_restored"])
			}
			// the heap and stack are writable: the task reads them from
			// the image itself (one copy); only read-only VMAs' pages
			// go through ctr-cr
			if read := num(t, m, "pages_task_read"); read <= 0 || read > num(t, m, "pages_restored") {
				t.Errorf("restore pages_task_read %v of %v restored", m["pages_task_read"], m["pages_restored"])
			}
			inj, batched := num(t, m, "injected_syscalls"), num(t, m, "batched_syscalls")
			if inj <= 0 || batched <= inj {
				t.Errorf("restore: %v injected round trips, %v syscalls in batches: most calls should be batched", inj, batched)
			}
		},
	})
}

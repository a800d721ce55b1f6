package tests

// dump --freeze-cgroup: the tree is seized while its cgroup is frozen.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// freezerCgroup creates a cgroup v1 freezer (or, without one, a cgroup v2
// directory) of the test's own, removed at the end once empty.
func freezerCgroup(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("ctrcr-test-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	var dir string
	switch {
	case fileExists("/sys/fs/cgroup/freezer/cgroup.procs"): // v1 freezer
		dir = filepath.Join("/sys/fs/cgroup/freezer", name)
	case fileExists("/sys/fs/cgroup/cgroup.controllers"): // pure v2
		dir = filepath.Join("/sys/fs/cgroup", name)
	default:
		t.Fatal("no cgroup v1 freezer nor cgroup v2 hierarchy at /sys/fs/cgroup")
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// the case is gone by now (cleanups run in reverse order); wait
		// for the cgroup to empty, then remove it
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := os.Remove(dir)
			if err == nil || time.Now().After(deadline) {
				if err != nil {
					t.Errorf("remove cgroup %s: %v", dir, err)
				}
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return dir
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// moveTree puts the case and its descendants into the cgroup.
func moveTree(t *testing.T, cg string, r *Run) {
	t.Helper()
	for _, pid := range append([]int{r.Pid}, descendants(r.Pid)...) {
		if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			t.Fatalf("move pid %d into %s: %v", pid, cg, err)
		}
	}
}

// TestCR_FreezeCgroup: a multi-threaded case and a case with a child are
// dumped with --freeze-cgroup (moved into a freezer cgroup of the test
// before each dump) and restored twice; the cgroup is thawed afterwards.
func TestCR_FreezeCgroup(t *testing.T) {
	for _, c := range []struct{ name, src string }{{"threads", "a_tls_threads.c"}, {"child", "e_child.c"}} {
		t.Run(c.name, func(t *testing.T) {
			testutil.RequiresRoot(t)
			cg := freezerCgroup(t)
			runCase(t, Case{Name: "Freeze_" + c.name, Src: c.src, DumpArgs: []string{"--freeze-cgroup", cg},
				BeforeDump: func(t *testing.T, r *Run) { moveTree(t, cg, r) },
				Verify: func(t *testing.T, r *Run) {
					if noCR {
						return
					}
					state, _ := os.ReadFile(filepath.Join(cg, "freezer.state"))
					if s := strings.TrimSpace(string(state)); s != "" && s != "THAWED" {
						t.Errorf("cgroup %s left %s", cg, s)
					}
				}})
		})
	}
}

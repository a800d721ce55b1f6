package cgroup

import (
	"os"
	"testing"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

func TestOpenDir(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, dir := range []string{"/sys/fs/cgroup/freezer", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(dir + "/cgroup.procs"); err != nil {
			continue
		}
		c, err := OpenDir(dir)
		if err != nil {
			t.Fatalf("OpenDir(%s): %v", dir, err)
		}
		if c.Paths().Unified == "" && len(c.Paths().V1) == 0 {
			t.Errorf("OpenDir(%s): no paths", dir)
		}
	}
	if _, err := OpenDir("/tmp"); err == nil {
		t.Error("OpenDir(/tmp) accepted a directory outside any cgroup hierarchy")
	}
	if _, err := OpenDir("relative"); err == nil {
		t.Error("OpenDir accepted a relative path")
	}
}

package tests

import (
	"fmt"
	"os"
	"testing"
)

// nsDiffers fails the test unless pid lives in another namespace of each
// kind than the test: a restore never puts the tree into the restorer's.
func nsDiffers(t *testing.T, pid int, kinds ...string) {
	t.Helper()
	for _, k := range kinds {
		theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, k))
		if err != nil {
			t.Fatal(err)
		}
		ours, err := os.Readlink("/proc/self/ns/" + k)
		if err != nil {
			t.Fatal(err)
		}
		if theirs == ours {
			t.Fatalf("pid %d was restored into the test's %s namespace (%s)", pid, k, ours)
		}
	}
}

// TestCR_IPCUTSNamespaces: a process in IPC and UTS namespaces of its own
// (unshare --ipc --uts) is dumped with them; restore creates both again
// with the hostname, domainname, SysV shm segments (same ids and key,
// attached where they were, contents), semaphores and queued messages.
func TestCR_IPCUTSNamespaces(t *testing.T) {
	runCase(t, Case{Name: "n_ipcuts", Src: "n_ipcuts.c", Verify: func(t *testing.T, w *Run) {
		nsDiffers(t, w.Pid, "ipc", "uts")
	}})
}

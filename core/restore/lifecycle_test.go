package restore

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/lifecycle"
	"github.com/ctr-cr/ctr-cr/core/netlock"
	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// fakeNotify records the hooks called, in order, and fails the one named
// by fail.
type fakeNotify struct {
	lifecycle.Base
	calls []string
	fail  string
	// during, when set, runs inside BeforeTasksRun (to look at the
	// state the hook sees)
	during func(pid int)
}

var errHook = errors.New("hook failed")

func (f *fakeNotify) hook(name string, pid int) error {
	f.calls = append(f.calls, fmt.Sprintf("%s(%d)", name, pid))
	if f.fail == name {
		return errHook
	}
	return nil
}

func (f *fakeNotify) NetworkLocked(pid int) error   { return f.hook("NetworkLocked", pid) }
func (f *fakeNotify) NetworkUnlocked(pid int) error { return f.hook("NetworkUnlocked", pid) }
func (f *fakeNotify) AfterRestore(pid int) error    { return f.hook("AfterRestore", pid) }
func (f *fakeNotify) BeforeTasksRun(pid int) error {
	if f.during != nil {
		f.during(pid)
	}
	return f.hook("BeforeTasksRun", pid)
}

// writeConnImage writes a minimal image whose inventory names the network
// lock name (none: "") and whose files hold one established TCP
// connection 10.0.0.1:1234 -> 10.0.0.2:80.
func writeConnImage(t *testing.T, name string) *image.Reader {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	w, err := image.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := w.WritePstree([]*imagepb.PstreeEntry{{Pid: 1}}); err != nil {
		t.Fatal(err)
	}
	conn := &imagepb.FileEntry{Id: 1, Kind: imagepb.FileKind_FILE_INET, Inet: &imagepb.InetSocket{Ino: 7,
		SrcAddr: []byte{10, 0, 0, 1}, SrcPort: 1234, DstAddr: []byte{10, 0, 0, 2}, DstPort: 80, Tcp: &imagepb.TcpStream{}}}
	if err := w.WriteFiles([]*imagepb.FileEntry{conn}); err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(&imagepb.Inventory{RootPid: 1, NetLock: name}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestPrepareWithoutLock: an image without a network lock: prepare calls
// BeforeTasksRun alone, with ctr-cr's pid (no root adopted), even with
// Relock, and returns its error as it is.
func TestPrepareWithoutLock(t *testing.T) {
	img := writeConnImage(t, "")
	n := &fakeNotify{}
	if _, err := prepare(img, Options{Relock: true, Notify: n}, n); err != nil {
		t.Fatal(err)
	}
	want := []string{fmt.Sprintf("BeforeTasksRun(%d)", os.Getpid())}
	if !slices.Equal(n.calls, want) {
		t.Fatalf("hooks %v, want %v", n.calls, want)
	}
	n = &fakeNotify{fail: "BeforeTasksRun"}
	if _, err := prepare(img, Options{Notify: n}, n); !errors.Is(err, errHook) || err.Error() != errHook.Error() {
		t.Fatalf("a failing BeforeTasksRun: %v, want %v as it is", err, errHook)
	}
}

// startInNetns starts a process that sleeps in a new network namespace
// (the root a caller would adopt) and returns its pid.
func startInNetns(t *testing.T) int {
	t.Helper()
	ns := testutil.NewNetns(t)
	argv := testutil.InNetns(ns, "sleep", "1000")
	cmd := exec.Command(argv[0], argv[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// nsenter execs sleep: wait until it is in the namespace
	for i := 0; i < 500; i++ {
		mine, _ := os.Readlink("/proc/self/ns/net")
		theirs, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)); theirs != "" && theirs != mine && filepath.Base(exe) == "sleep" {
			return cmd.Process.Pid
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the sleeper did not enter its network namespace")
	return 0
}

// tablesIn lists the network lock tables in the network namespace of pid.
func tablesIn(t *testing.T, pid int) []string {
	t.Helper()
	var tables []string
	if err := inNetns(pid, func() (err error) { tables, err = netlock.Tables(); return err }); err != nil {
		t.Fatal(err)
	}
	return tables
}

// TestPrepareRelock: with Relock, the image's connections are locked again
// in the adopted root's network namespace before NetworkLocked and
// BeforeTasksRun (which sees the lock); a failing BeforeTasksRun removes
// the lock again and NetworkUnlocked follows, and the error is the hook's.
func TestPrepareRelock(t *testing.T) {
	testutil.RequiresRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft is needed for the network lock")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pid := startInNetns(t)
	name := netlock.NewName()
	img := writeConnImage(t, name)
	for _, fail := range []string{"", "NetworkLocked", "BeforeTasksRun"} {
		var seen []string
		n := &fakeNotify{fail: fail, during: func(pid int) { seen = tablesIn(t, pid) }}
		_, err := prepare(img, Options{Adopt: pid, Relock: true, Notify: n}, n)
		want := []string{fmt.Sprintf("NetworkLocked(%d)", pid), fmt.Sprintf("BeforeTasksRun(%d)", pid)}
		switch fail {
		case "":
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(seen, name) {
				t.Fatalf("BeforeTasksRun saw the tables %v, want %s among them", seen, name)
			}
			if err := unlockIn(pid, name); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(n.calls, want) {
				t.Fatalf("hooks %v, want %v", n.calls, want)
			}
			continue
		case "NetworkLocked":
			want = want[:1]
		}
		want = append(want, fmt.Sprintf("NetworkUnlocked(%d)", pid))
		if !errors.Is(err, errHook) {
			t.Fatalf("%s failing: %v, want the hook's error", fail, err)
		}
		if !slices.Equal(n.calls, want) {
			t.Fatalf("%s failing: hooks %v, want %v", fail, n.calls, want)
		}
		if tables := tablesIn(t, pid); slices.Contains(tables, name) {
			t.Fatalf("%s failing: the lock %s is left in the namespace (%v)", fail, name, tables)
		}
	}
	if tables, err := netlock.Tables(); err != nil || slices.Contains(tables, name) {
		t.Fatalf("ctr-cr's own namespace: tables %v (%v): the lock belongs in the root's", tables, err)
	}
}

// TestNotifyRestored: once the tree runs, NetworkUnlocked (only when the
// image had a lock) comes before AfterRestore; an error of either is the
// restore's, and the tree is killed (abort) then and only then.
func TestNotifyRestored(t *testing.T) {
	for _, tc := range []struct {
		fail    string
		hadLock bool
		want    []string
	}{
		{"", true, []string{"NetworkUnlocked(10)", "AfterRestore(20)"}},
		{"", false, []string{"AfterRestore(20)"}},
		{"NetworkUnlocked", true, []string{"NetworkUnlocked(10)"}},
		{"AfterRestore", true, []string{"NetworkUnlocked(10)", "AfterRestore(20)"}},
		{"AfterRestore", false, []string{"AfterRestore(20)"}},
	} {
		n := &fakeNotify{fail: tc.fail}
		aborted := false
		err := notifyRestored(n, tc.hadLock, 10, 20, func() { aborted = true })
		if !slices.Equal(n.calls, tc.want) {
			t.Errorf("fail=%q lock=%v: hooks %v, want %v", tc.fail, tc.hadLock, n.calls, tc.want)
		}
		if failed := tc.fail != ""; aborted != failed || errors.Is(err, errHook) != failed {
			t.Errorf("fail=%q lock=%v: error %v, tree killed %v", tc.fail, tc.hadLock, err, aborted)
		}
	}
}

// Package platformtests runs ctr-cr as the checkpoint engine of real
// container platforms: Debian's podman (with conmon) and containerd (with
// its runc shim and ctr), ctr-cr installed as their runtime `runc` (a
// symlink to the binary, as `make build` makes bin/runtime/runc), on a
// busybox image built here from busybox-static (no registry).
package platformtests

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, f := range cleanups {
		f()
	}
	testutil.Cleanup()
	os.Exit(code)
}

// cleanups run once all tests are done (the shared image, the runtime dir).
var cleanups []func()

var (
	rtOnce sync.Once
	rtDir  string // holds runc -> ctr-cr
	crDir  string // holds criu -> ctr-cr
)

// runtimeDirs returns the directory holding ctr-cr as `runc` and the one
// holding it as `criu` (podman's version probe), each of its own, as an
// operator installs them (docs/platforms.md).
func runtimeDirs(t *testing.T) (string, string) {
	t.Helper()
	bin := testutil.BuildCtrCr(t)
	rtOnce.Do(func() {
		base, err := os.MkdirTemp("", "ctrcr-platform-")
		if err != nil {
			t.Fatal(err)
		}
		cleanups = append(cleanups, func() { os.RemoveAll(base) })
		rtDir, crDir = filepath.Join(base, "runtime"), filepath.Join(base, "criu")
		for _, l := range []string{filepath.Join(rtDir, "runc"), filepath.Join(crDir, "criu")} {
			os.MkdirAll(filepath.Dir(l), 0o755)
			if err := os.Symlink(bin, l); err != nil {
				t.Fatal(err)
			}
		}
	})
	if rtDir == "" {
		t.Fatal("runtime dir not made")
	}
	return rtDir, crDir
}

// requireTools skips without root and fails when a tool the platform test
// needs is missing (scripts/deps.sh installs them).
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	testutil.RequiresRoot(t)
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (scripts/deps.sh installs it)", tool, err)
		}
	}
}

// busyboxTar writes a tar of a minimal root file system (busybox-static
// and its applets' links, the directories a runtime mounts on) to w.
func busyboxTar(w io.Writer) error {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return err
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	now := time.Now()
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "etc", "run", "data"} {
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: now}); err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data)), ModTime: now}); err != nil {
		return err
	}
	if _, err := tw.Write(data); err != nil {
		return err
	}
	for _, app := range []string{"sh", "cat", "sleep", "echo", "ls", "ps", "true", "readlink", "hostname"} {
		if err := tw.WriteHeader(&tar.Header{Name: "bin/" + app, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777, ModTime: now}); err != nil {
			return err
		}
	}
	return tw.Close()
}

// counterScript counts in memory (the shell's i) and in a tmpfs file
// (/data/c) ten times a second, printing "n I" each time, and checks from
// inside, before each step, that the file still holds the count it wrote
// last: a restore that lost the tmpfs or the memory prints FAIL.
const counterScript = `i=0; while :; do i=$((i+1)); if [ $i -gt 1 ] && [ "$(cat /data/c)" != "$((i-1))" ]; then echo "FAIL tmpfs=$(cat /data/c) memory=$((i-1))"; fi; echo $i > /data/c; echo "n $i"; sleep 0.1; done`

// counts reads the "n I" lines of a counter's log; FAIL lines fail t.
func counts(t *testing.T, log string) []int {
	t.Helper()
	var ns []int
	for _, l := range strings.Split(log, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "FAIL") {
			t.Errorf("the counter found its state changed: %s", l)
		}
		if v, ok := strings.CutPrefix(l, "n "); ok {
			if n, err := strconv.Atoi(v); err == nil {
				ns = append(ns, n)
			}
		}
	}
	return ns
}

// checkContinuous fails t unless the counts run 1, 2, 3, ... without a gap
// or a restart: the log went on across every checkpoint and restore.
func checkContinuous(t *testing.T, ns []int) {
	t.Helper()
	for i, n := range ns {
		if n != i+1 {
			t.Errorf("log not continuous at line %d: %d (counts %v)", i+1, n, ns[max(0, i-3):min(len(ns), i+3)])
			return
		}
	}
}

// waitFor polls cond every 50 ms for up to 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func last(ns []int) int {
	if len(ns) == 0 {
		return 0
	}
	return ns[len(ns)-1]
}

func uniqueName(prefix string) string {
	return fmt.Sprintf("ctrcr-%s-%d-%d", prefix, os.Getpid(), time.Now().UnixNano()%1e6)
}

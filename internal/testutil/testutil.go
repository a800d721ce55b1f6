// Package testutil holds the few helpers shared by ctr-cr's tests.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// RequiresRoot skips the test when it does not run as root.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("requires root")
	}
}

// RepoRoot returns the root directory of the ctr-cr module.
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if ok {
		root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return root
		}
	}
	// Fall back to walking up from the working directory.
	dir, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			panic("testutil: go.mod not found")
		}
		dir = parent
	}
}

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

// BuildCtrCr builds ./cmd/ctr-cr (CGO_ENABLED=0) once per test binary and
// returns the path of the binary. The environment variable CTRCR_BIN names a
// prebuilt binary to use as is. The build directory is removed by Cleanup,
// which TestMain should call after m.Run.
func BuildCtrCr(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if bin := os.Getenv("CTRCR_BIN"); bin != "" {
			buildBin, buildErr = filepath.Abs(bin)
			if buildErr == nil {
				_, buildErr = os.Stat(buildBin)
			}
			return
		}
		buildDir = filepath.Join(os.TempDir(), fmt.Sprintf("ctrcr-test-%d", os.Getpid()))
		if buildErr = os.MkdirAll(buildDir, 0o755); buildErr != nil {
			return
		}
		bin := filepath.Join(buildDir, "ctr-cr")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/ctr-cr")
		cmd.Dir = RepoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/ctr-cr: %v\n%s", err, out)
			return
		}
		buildBin = bin
	})
	if buildErr != nil {
		t.Fatalf("ctr-cr binary: %v", buildErr)
	}
	return buildBin
}

// Cleanup removes what BuildCtrCr created. Call it from TestMain.
func Cleanup() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

package tests

// Second half of the end-to-end cases: memory layout, heap, file
// descriptors, deleted files, the Go runtime, a dynamically linked program
// and a real interpreter. Each case checks its own state from inside after
// the restores (see the comment at the top of each source); the Verify hooks
// here add what is better seen from outside.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestCR_Vmas: every VMA kind (sparse anon, PROT_NONE guard, read-only,
// growsdown, madvise flags, shared anon, memfd mapped twice, private and
// shared file mappings, named anon); contents, maps lines, VmFlags,
// protections, sharing and the vDSO clock.
func TestCR_Vmas(t *testing.T) {
	runCase(t, Case{
		Name: "b_vmas",
		Src:  "b_vmas.c",
		Verify: func(t *testing.T, w *Run) {
			// The restored process must not have brought its own copy of
			// the files it maps: the very files in WORKDIR are mapped.
			for _, f := range []string{"vmas_priv.dat", "vmas_shared.dat"} {
				requireMapsMention(t, w.Pid, filepath.Join(w.Dir, f))
			}
		},
	})
}

// TestCR_Brk: the brk heap keeps its contents and bounds and still grows.
func TestCR_Brk(t *testing.T) {
	runCase(t, Case{Name: "b_brk", Src: "b_brk.c"})
}

// TestCR_Files: regular files (shared and separate offsets, O_APPEND), a
// directory fd, character devices, cloexec, dup2 and O_PATH fds.
func TestCR_Files(t *testing.T) {
	runCase(t, Case{Name: "b_files", Src: "b_files.c"})
}

// TestCR_Deleted: a file unlinked while open and mapped comes back
// unlinked, with its contents, and leaves nothing behind in WORKDIR.
func TestCR_Deleted(t *testing.T) {
	runCase(t, Case{
		Name: "b_deleted",
		Src:  "b_deleted.c",
		Verify: func(t *testing.T, w *Run) {
			ents, err := os.ReadDir(w.Dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if strings.Contains(e.Name(), "ghost") {
					t.Errorf("restore left %s in the work dir", e.Name())
				}
			}
		},
	})
}

// TestCR_GoGC: a multi-threaded Go program with a busy GC, goroutines and
// a ticker.
func TestCR_GoGC(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildGoCase(t, "b_gogc")
	runCase(t, Case{Name: "b_gogc", Cmd: []string{bin, "{WORKDIR}"}})
}

// TestCR_Dynamic: a dynamically linked PIE using libc and dlopen(libm).
func TestCR_Dynamic(t *testing.T) {
	runCase(t, Case{
		Name: "b_dynamic",
		Src:  "b_dynamic.c",
		Verify: func(t *testing.T, w *Run) {
			// The executable behind the restored process is the case binary.
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", w.Pid))
			if err != nil {
				t.Fatal(err)
			}
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", w.Pid))
			if err != nil {
				t.Fatal(err)
			}
			argv0, _, _ := bytes.Cut(cmdline, []byte{0})
			if exe != string(argv0) {
				t.Errorf("/proc/%d/exe is %q, argv[0] %q", w.Pid, exe, argv0)
			}
		},
	})
}

// TestCR_PyDict: CPython holding a 200k-entry dict.
func TestCR_PyDict(t *testing.T) {
	testutil.RequiresRoot(t)
	py := findPython3(t)
	script := filepath.Join(testutil.RepoRoot(), "tests", "cases", "b_pydict.py")
	runCase(t, Case{
		Name:         "b_pydict",
		Cmd:          []string{py, script, "{WORKDIR}"},
		ReadyTimeout: 60 * time.Second,
	})
}

// buildGoCase builds the Go program tests/cases/<name> (CGO_ENABLED=0) into
// a temporary directory and returns the binary.
func buildGoCase(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-o", bin, "./tests/cases/"+name)
	cmd.Dir = testutil.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./tests/cases/%s: %v\n%s", name, err, out)
	}
	// Like the C cases' build dir: reachable after dropping root.
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// findPython3 returns the real python3 interpreter: /usr/bin/python3, or the
// sys.executable of python3 on PATH (which may be a wrapper script, e.g. a
// pyenv shim, that is not itself the interpreter). A missing python3 fails
// the test: CI installs it.
func findPython3(t *testing.T) string {
	t.Helper()
	if fi, err := os.Stat("/usr/bin/python3"); err == nil && !fi.IsDir() {
		return "/usr/bin/python3"
	}
	path, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 not found (neither /usr/bin/python3 nor on PATH): %v", err)
	}
	out, err := exec.Command(path, "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if exe := strings.TrimSpace(string(out)); exe != "" {
		return exe
	}
	return path
}

// requireMapsMention fails unless /proc/pid/maps has a mapping of path.
func requireMapsMention(t *testing.T, pid int, path string) {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(maps), "\n") {
		if strings.HasSuffix(l, " "+path) {
			return
		}
	}
	t.Errorf("/proc/%d/maps has no mapping of %s", pid, path)
}

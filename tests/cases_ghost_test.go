package tests

// Cases of deleted and temporary files, memfds, file owners and a deleted
// cwd (helper "ghost"): each checks its state from inside after two
// dump/restore cycles.

import (
	"strconv"
	"strings"
	"testing"
)

// TestCR_GhostTmpfile: O_TMPFILE files (and tmpfile()) come back as
// O_TMPFILEs of the same directory, linkable, with contents, flags and
// offsets.
func TestCR_GhostTmpfile(t *testing.T) {
	runCase(t, Case{Name: "g_tmpfile", Src: "g_tmpfile.c"})
}

// TestCR_GhostSparse: a deleted sparse file keeps its holes (same
// SEEK_DATA/SEEK_HOLE results, st_blocks), a 10 GiB one with little data
// fits the default --ghost-limit, and a deleted file's inode flags
// (append-only, noatime) come back.
func TestCR_GhostSparse(t *testing.T) {
	runCase(t, Case{Name: "g_sparse", Src: "g_sparse.c"})
}

// TestCR_GhostMemfd: memfds keep name, mode, seals and creation flags, a
// process exec'd from a memfd keeps it as exe, a memfd mapped in one
// process and open in another stays one object.
func TestCR_GhostMemfd(t *testing.T) {
	runCase(t, Case{Name: "g_memfd", Src: "g_memfd.c"})
}

// TestCR_GhostFown: F_SETOWN_EX owners (thread, process, process group),
// F_SETSIG, O_ASYNC (a pipe still signals), O_NOATIME, O_DIRECT, O_SYNC
// and O_DSYNC of open file descriptions come back.
func TestCR_GhostFown(t *testing.T) {
	runCase(t, Case{Name: "g_fown", Src: "g_fown.c"})
}

// TestCR_GhostCwd: a removed cwd, a removed directory held open, chroot'ed
// tasks (cwd inside and outside the root) and a removed root come back.
func TestCR_GhostCwd(t *testing.T) {
	runCase(t, Case{Name: "g_cwd", Src: "g_cwd.c"})
}

// TestNegative_FownOutside: a file whose F_SETOWN owner is outside the
// dump is refused by name (pid, fd, owner) and the process runs on
// unchanged.
func TestNegative_FownOutside(t *testing.T) {
	refusedCase(t, "g_fownext", "F_SETOWN owner", "outside the dump")
}

// TestNegative_TmpfileLinked: an fd opened with O_TMPFILE whose file was
// linked since is refused by name and the process runs on unchanged.
func TestNegative_TmpfileLinked(t *testing.T) {
	refusedCase(t, "g_tmplinked", "O_TMPFILE", "linked since")
}

// refusedCase starts tests/cases/<name>.c, whose fd 42 must make the dump
// fail with exit 1 naming pid, fd 42 and wants; the case then runs on and
// passes its own check.
func refusedCase(t *testing.T, name string, wants ...string) {
	t.Helper()
	requireRefusedDump(t, Case{Name: name, Src: name + ".c"}, func(t *testing.T, stderr string, pid int) {
		for _, want := range append([]string{"pid " + strconv.Itoa(pid), "fd 42"}, wants...) {
			if !strings.Contains(stderr, want) {
				t.Errorf("dump error does not say %q:\n%s", want, stderr)
			}
		}
	})
}

// TestCR_GhostExe: an executable deleted after its start stays the exe,
// deleted, with the same bytes.
func TestCR_GhostExe(t *testing.T) {
	runCase(t, Case{Name: "g_exedel", Src: "g_exedel.c"})
}

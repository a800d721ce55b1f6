package tests

// Cases of deleted and temporary files, memfds, file owners and a deleted
// cwd (helper "ghost"): each checks its state from inside after two
// dump/restore cycles.

import "testing"

// TestCR_GhostTmpfile: O_TMPFILE files (and tmpfile()) come back as
// O_TMPFILEs of the same directory, linkable, with contents, flags and
// offsets.
func TestCR_GhostTmpfile(t *testing.T) {
	runCase(t, Case{Name: "g_tmpfile", Src: "g_tmpfile.c"})
}

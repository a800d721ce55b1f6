package tests

// File locks (flock, POSIX record locks, OFD locks, leases) and the owner
// and mode of pty slaves.

import "testing"

// TestCR_PtyOwner: a pty slave chown'ed/chmod'ed while open, and one
// never opened chown'ed by path, keep their owner and mode (l_ptyowner.c).
func TestCR_PtyOwner(t *testing.T) {
	runCase(t, Case{Name: "l_ptyowner", Src: "l_ptyowner.c"})
}

// TestCR_FileLocks: flock, POSIX record locks (two processes) and an OFD
// lock, and a task waiting in F_SETLKW, dumped with --file-locks; checked
// from inside and from a checker forked after restore (l_locks.c).
func TestCR_FileLocks(t *testing.T) {
	runCase(t, Case{Name: "l_locks", Src: "l_locks.c", DumpArgs: []string{"--file-locks"}, RestoreArgs: []string{"--file-locks"}})
}

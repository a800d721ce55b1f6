package tests

// File locks (flock, POSIX record locks, OFD locks, leases) and the owner
// and mode of pty slaves.

import "testing"

// TestCR_PtyOwner: a pty slave chown'ed/chmod'ed while open, and one
// never opened chown'ed by path, keep their owner and mode (l_ptyowner.c).
func TestCR_PtyOwner(t *testing.T) {
	runCase(t, Case{Name: "l_ptyowner", Src: "l_ptyowner.c"})
}

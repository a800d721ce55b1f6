package tests

// Pipe cases: per-description flags, queued data restored once per pipe,
// packet-mode pipes, full pipes read through two descriptions.

import "testing"

// TestCR_PipeFlags: every open file description of a pipe keeps its own
// flags (O_NONBLOCK, O_APPEND, O_DIRECT); queued data comes back once; a
// full 1 MiB pipe with an O_NONBLOCK write end opened twice for reading
// comes back byte for byte; a packet pipe keeps its message boundaries.
func TestCR_PipeFlags(t *testing.T) {
	runCase(t, Case{Name: "p_pipes", Src: "p_pipes.c"})
}

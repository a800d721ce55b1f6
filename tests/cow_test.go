package tests

// Copy-on-write sharing between a parent and its forked children
// (tests/cases/m_cowfork.c): the pages a child still shares with its
// parent since the fork come back shared, not as a copy per process.

import "testing"

// TestCR_MemCowFork: a parent fills 256 MiB of private anonymous memory
// and forks 4 children that each write a few pages; after the restores
// every process sees its contents and the region is still shared (from
// inside: its private pages in /proc/self/smaps are its own written pages
// only).
func TestCR_MemCowFork(t *testing.T) {
	runCase(t, Case{Name: "m_cowfork", Src: "m_cowfork.c"})
}

// TestCR_MemCowForkNested: the same with a grandchild forked by the first
// child after it wrote its pages: the grandchild shares with its parent
// what its parent shares with the root.
func TestCR_MemCowForkNested(t *testing.T) {
	runCase(t, Case{Name: "m_cowfork_nested", Src: "m_cowfork.c", CFlags: []string{"-DCOW_NESTED"}})
}

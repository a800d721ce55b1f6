package main

import (
	"fmt"
	"os"

	"github.com/ctr-cr/ctr-cr/core/lazy"
	"github.com/ctr-cr/ctr-cr/core/restore"
)

// Lazy restore (restore --lazy-pages, core/lazy): the tree runs before
// its private anonymous memory is in. ctr-cr serves the pages until the
// last one is in: with -d it returns then, in the foreground it goes on
// waiting for the root. If the pages cannot come, the tree is killed and
// restore fails with the reason.

// waitLazy waits for res's last page, prints when it came (and the lazy
// figures with --print-stats) and returns the error that killed the tree,
// if the pages could not all come.
func waitLazy(res *restore.Restored, stats bool) error {
	if res.Lazy == nil {
		return nil
	}
	st, err := res.Lazy.Wait()
	if err != nil {
		return fmt.Errorf("lazy pages: the restored tree (pid %d) was killed: %w", res.Pid, err)
	}
	fmt.Fprintf(os.Stderr, "ctr-cr: lazy pages: last page in %.1f ms after the tree started: %d pages (%d on fault, %d in the background, %d dropped by the program first)\n",
		st.LastPageMs, st.PagesLazy, st.PagesOnFault, st.PagesBackground, st.PagesDropped)
	if stats {
		printStats(st)
	}
	return nil
}

// lazyGuardMain runs the guard process of a lazy restore (core/lazy's
// guard.go) when ctr-cr is re-executed as one.
func lazyGuardMain() {
	if len(os.Args) > 1 && os.Args[1] == lazy.GuardArg {
		os.Exit(lazy.RunGuard())
	}
}

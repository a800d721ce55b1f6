package main

import (
	"fmt"
	"os"
	"sync"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/lazy"
	"github.com/ctr-cr/ctr-cr/core/pageserver"
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
func waitLazy(res *restore.Restored, c *restoreConfig) error {
	if res.Lazy == nil {
		c.pageSource.finish(true)
		return nil
	}
	st, err := res.Lazy.Wait()
	c.pageSource.finish(err == nil)
	if err != nil {
		return fmt.Errorf("lazy pages: the restored tree (pid %d) was killed: %w", res.Pid, err)
	}
	fmt.Fprintf(os.Stderr, "ctr-cr: lazy pages: last page in %.1f ms after the tree started: %d pages (%d on fault, %d in the background, %d dropped by the program first)\n",
		st.LastPageMs, st.PagesLazy, st.PagesOnFault, st.PagesBackground, st.PagesDropped)
	if c.stats {
		printStats(st)
	}
	return nil
}

// pageSource is restore --page-server's lazy page server: told once
// whether the restore got every page (it exits then).
type pageSource struct {
	ps       *pageserver.PageSource
	mu       sync.Mutex
	finished bool
}

// restorePageSource makes the page source of --page-server, if given.
func restorePageSource(c *restoreConfig) (func(string) (image.PagesSource, error), error) {
	if c.pageServer == "" {
		return nil, nil
	}
	ps, err := pageserver.NewPageSource(c.pageServer)
	if err != nil {
		return nil, usageErrorf(restoreSynopsis, "%v", err)
	}
	c.pageSource = &pageSource{ps: ps}
	return func(name string) (image.PagesSource, error) { return ps.Open(name) }, nil
}

// finish tells the page server the outcome, once; nil: no page server.
func (p *pageSource) finish(ok bool) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.finished = true
	if err := p.ps.Finish(ok); err != nil && ok {
		msgs.warnf("%v", err)
	}
}

// lazyGuardMain runs the guard process of a lazy restore (core/lazy's
// guard.go) when ctr-cr is re-executed as one.
func lazyGuardMain() {
	if len(os.Args) > 1 && os.Args[1] == lazy.GuardArg {
		os.Exit(lazy.RunGuard())
	}
}

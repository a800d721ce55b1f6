package dump

import (
	"errors"
	"fmt"
	"sync"

	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/internal/fault"
)

// collectAll runs collectCore for every live process, each on its tracer
// thread, the tracers in parallel. Meanwhile this goroutine reads the fd
// table and the mappings (readProc) of every process whose collectCore has
// ended, in the tree's order: the /proc reads of one process overlap the
// injection round trips of the next, which wait for the tracees to be
// scheduled (a 20-process tree with --jobs 1 had 15-40 ms of them after
// 50-300 ms of injection). A process's mappings are read only once its
// injection area is gone. The fd tables are returned by pid.
//
// A collect error wins over a /proc one (as when the reads came after
// every collect); either way every collectCore has ended on return.
func (d *dumper) collectAll(fopts files.Options) (map[int][]*imagepb.FdEntry, error) {
	var wg sync.WaitGroup
	errs := make([]error, len(d.tasks))
	done := make([]chan struct{}, len(d.tasks))
	for i, t := range d.tasks {
		done[i] = make(chan struct{})
		if t.zombie {
			close(done[i])
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done[i])
			t.tr.Do(func() {
				if err := d.collectCore(t); err != nil {
					errs[i] = fmt.Errorf("pid %d: %w", t.pid, err)
				}
			})
		}()
	}
	fdTables := map[int][]*imagepb.FdEntry{}
	var procErr error
	for i, t := range d.tasks {
		<-done[i]
		if t.zombie || errs[i] != nil {
			continue
		}
		d.pm.startScan(t.pid) // alongside the smaps read (pre-copy)
		if procErr = d.readProc(t, fopts); procErr != nil {
			break
		}
		fdTables[t.pid] = t.fds
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	fault.Point("dump:collected")
	return fdTables, procErr
}

// readProc reads the fd table and the mappings of the collected process t.
func (d *dumper) readProc(t *task, fopts files.Options) error {
	var err error
	if t.fds, err = d.files.DumpFds(t.pid, fopts); err != nil {
		return fmt.Errorf("pid %d: %w", t.pid, err)
	}
	if t.mm, err = d.buildMm(t); err != nil {
		return fmt.Errorf("pid %d: memory: %w", t.pid, err)
	}
	return nil
}

package memory

// pipeline overlaps reading pages with writing them: the buffer is split
// in two halves; runs are read into the current half (next, add) while a
// goroutine passes the other half's runs to the sink, in order. A half is
// handed over when it is full or at finish. Runs stay in address order
// because there is one writer and halves are handed over in turn.
//
// With less than two pages of buffer the pipeline degrades to writing each
// run at once on the caller's goroutine.
type pipeline struct {
	sink Sink
	cur  []byte // half being filled
	off  int    // bytes of cur filled
	runs []pageRun
	todo chan batch // to the writer
	free chan batch // halves to fill: the second at the start, then back from the writer with its error
	err  error      // first writer error seen
	sync bool
}

type pageRun struct {
	addr uint64
	data []byte
}

type batch struct {
	buf  []byte
	runs []pageRun
	err  error
}

func newPipeline(buf []byte, sink Sink) *pipeline {
	half := len(buf) / 2 / PageSize * PageSize
	if half < PageSize {
		return &pipeline{sink: sink, cur: buf, sync: true}
	}
	p := &pipeline{sink: sink, cur: buf[:half:half], todo: make(chan batch, 1), free: make(chan batch, 2)}
	p.free <- batch{buf: buf[half : 2*half : 2*half]}
	go func() {
		var err error
		for b := range p.todo {
			for _, r := range b.runs {
				if err != nil {
					break
				}
				err = sink.WritePages(r.addr, r.data)
			}
			p.free <- batch{buf: b.buf, runs: b.runs[:0], err: err}
		}
		close(p.free)
	}()
	return p
}

// next returns room for up to pages pages (at least one) to read into; the
// caller reads into all of it and then calls add. It fails with the
// writer's first error.
func (p *pipeline) next(pages uint64) ([]byte, error) {
	if p.err != nil {
		return nil, p.err
	}
	if p.sync {
		n := min(pages*PageSize, uint64(len(p.cur)))
		return p.cur[:n], nil
	}
	if p.off == len(p.cur) {
		if err := p.handOver(); err != nil {
			return nil, err
		}
	}
	n := min(pages*PageSize, uint64(len(p.cur)-p.off))
	return p.cur[p.off : p.off+int(n)], nil
}

// add queues the run just read into the room next returned.
func (p *pipeline) add(addr uint64, data []byte) {
	if p.sync {
		p.err = p.sink.WritePages(addr, data)
		return
	}
	p.runs = append(p.runs, pageRun{addr, data})
	p.off += len(data)
}

// handOver gives the current half to the writer and takes the other one,
// waiting for the writer to be done with it.
func (p *pipeline) handOver() error {
	p.todo <- batch{buf: p.cur, runs: p.runs}
	b := <-p.free
	if b.err != nil {
		p.err = b.err
		return b.err
	}
	p.cur, p.runs, p.off = b.buf, b.runs, 0
	return nil
}

// finish writes what is queued and waits for the writer; it returns the
// first write error.
func (p *pipeline) finish() error {
	if p.err != nil || p.sync {
		return p.err
	}
	if len(p.runs) > 0 {
		p.todo <- batch{buf: p.cur, runs: p.runs}
		p.runs = nil
	}
	close(p.todo)
	for b := range p.free {
		if b.err != nil && p.err == nil {
			p.err = b.err
		}
	}
	p.todo = nil
	return p.err
}

// stop ends the writer after an early return (reading failed); the sink
// gets nothing more. Safe after finish.
func (p *pipeline) stop() {
	if p.sync || p.todo == nil {
		return
	}
	close(p.todo)
	for range p.free {
	}
	p.todo = nil
}

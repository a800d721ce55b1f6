package restore

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/ctr-cr/ctr-cr/core/memory"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
)

// Layout of a batch in the control area: ptrace.BatchCode sits in the
// gadget's page at batchCodeOff (written once when the control area is
// made, so every task forked from the root stub has it); a batch's table
// fills the start of the scratch area and its memory arguments follow at
// batchDataOff.
const (
	batchCodeOff = 128
	batchDataOff = 32 << 10
	batchMax     = batchDataOff / ptrace.BatchEntrySize
)

// callBatch collects syscalls for one thread of a task and runs them in
// one go inside it: a process's rlimits, a thread's creds and per-thread
// state are each one ptrace round trip instead of one per call (a
// 20-process Go tree made ~3000 injected calls, half of them these).
// Calls run in the order added and stop at the first failure, whose error
// names the call, as with r.call one by one.
//
// A batch of more than batchMax calls runs as several tables in turn; its
// memory arguments are all written first and must fit the data area.
type callBatch struct {
	r      *restorer
	i      int            // thread
	chunks []ptrace.Batch // at most batchMax calls each
	data   []byte         // memory arguments, at r.scratch+batchDataOff
	err    error          // an argument did not fit
}

func (r *restorer) batch(i int) *callBatch { return &callBatch{r: r, i: i} }

// arg places p among the batch's memory arguments and returns its address
// in the task (8-byte aligned).
func (cb *callBatch) arg(p []byte) uint64 {
	off := (len(cb.data) + 7) &^ 7
	if batchDataOff+off+len(p) > ctlScratchPages*memory.PageSize {
		if cb.err == nil {
			cb.err = fmt.Errorf("batch arguments overflow the scratch area (%d bytes more)", len(p))
		}
		return 0
	}
	cb.data = append(cb.data, make([]byte, off-len(cb.data))...)
	cb.data = append(cb.data, p...)
	return cb.r.scratch + batchDataOff + uint64(off)
}

// add queues syscall nr; what names it in an error.
func (cb *callBatch) add(what string, nr uint64, args ...uint64) {
	if n := len(cb.chunks); n == 0 || cb.chunks[n-1].Len() == batchMax {
		cb.chunks = append(cb.chunks, ptrace.Batch{})
	}
	cb.chunks[len(cb.chunks)-1].Add(what, nr, args...)
}

// run makes the queued calls in thread i and returns their results.
func (cb *callBatch) run() ([]uint64, error) {
	wait, err := cb.start()
	if err != nil {
		return nil, err
	}
	return wait()
}

// start is run without waiting for the last table: it runs the others,
// starts the last and returns; wait (to be called once) waits for it and
// returns all the results. Meanwhile the tracer may use other tasks.
func (cb *callBatch) start() (wait func() ([]uint64, error), err error) {
	r, t := cb.r, cb.r.threads[cb.i]
	if cb.err != nil {
		return nil, cb.err
	}
	if len(cb.data) > 0 {
		if err := r.mem.WriteAt(cb.data, r.scratch+batchDataOff); err != nil {
			return nil, err
		}
	}
	var out []uint64
	for k := range cb.chunks {
		b := &cb.chunks[k]
		w, err := ptrace.StartBatch(r.mem, t.tid, t.in.Base, r.ctl+batchCodeOff, r.scratch, b)
		t.in.Count++
		r.st.BatchedSyscalls += b.Len()
		if err != nil {
			return nil, err
		}
		if k == len(cb.chunks)-1 {
			return func() ([]uint64, error) {
				res, err := w()
				if err != nil {
					return nil, err
				}
				return append(out, res...), nil
			}, nil
		}
		res, err := w()
		if err != nil {
			return nil, err
		}
		out = append(out, res...)
	}
	return func() ([]uint64, error) { return out, nil }, nil
}

// lastCap is the highest capability this kernel knows
// (/proc/sys/kernel/cap_last_cap), or -1 when it cannot be read.
var lastCap = sync.OnceValue(func() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 || n > 63 {
		return -1
	}
	return n
})

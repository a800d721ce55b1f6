package ptrace

import (
	"encoding/binary"
	"fmt"
)

// BatchEntrySize is the size of one entry of a syscall batch table: the
// syscall number, six arguments, and the slot the result is stored in.
const BatchEntrySize = 64

// BatchCode runs a table of syscalls inside the tracee in one go: with
// rbx = a table of r12 entries (BatchEntrySize bytes: nr, a0..a5, result),
// it makes each call, stores rax in the entry's result slot and goes on
// while the call succeeded; it stops on int3 after the last entry or after
// the first failure (rax in -4095..-1). Each injected syscall costs a
// ptrace round trip (25-40 µs on the test VM); a batch costs one.
var BatchCode = []byte{
	// loop:
	0x4d, 0x85, 0xe4, // test r12, r12
	0x74, 0x32, // jz done
	0x48, 0x8b, 0x03, // mov rax, [rbx]
	0x48, 0x8b, 0x7b, 0x08, // mov rdi, [rbx+8]
	0x48, 0x8b, 0x73, 0x10, // mov rsi, [rbx+16]
	0x48, 0x8b, 0x53, 0x18, // mov rdx, [rbx+24]
	0x4c, 0x8b, 0x53, 0x20, // mov r10, [rbx+32]
	0x4c, 0x8b, 0x43, 0x28, // mov r8, [rbx+40]
	0x4c, 0x8b, 0x4b, 0x30, // mov r9, [rbx+48]
	0x0f, 0x05, // syscall
	0x48, 0x89, 0x43, 0x38, // mov [rbx+56], rax
	0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, // cmp rax, -4095
	0x73, 0x09, // jae done
	0x48, 0x83, 0xc3, 0x40, // add rbx, 64
	0x49, 0xff, 0xcc, // dec r12
	0xeb, 0xc9, // jmp loop
	// done:
	0xcc, // int3
}

// notRun marks a result slot of an entry the batch did not reach.
const notRun = 1 << 62

// Batch is a list of syscalls to run in one go with RunBatch.
type Batch struct {
	calls []batchCall
}

type batchCall struct {
	what    string
	nr      uint64
	args    [6]uint64
	mayFail bool // its result is the raw return value, errors included
}

// Add queues syscall nr with args; what names it in errors.
func (b *Batch) Add(what string, nr uint64, args ...uint64) {
	if n := len(b.calls); n > 0 && b.calls[n-1].mayFail {
		panic("ptrace: Batch.Add after AddMayFail") // a failure stops the batch
	}
	c := batchCall{what: what, nr: nr}
	copy(c.args[:], args)
	b.calls = append(b.calls, c)
}

// AddMayFail queues syscall nr as the batch's last call, one whose failure
// is an answer, not an error: its result is the raw return value (a
// negative errno on failure; see Errno). The batch stops at a failure, so
// nothing may be added after it. It spares a call whose error tells
// something (ENOSYS, EINVAL on an older kernel) an injection round trip of
// its own.
func (b *Batch) AddMayFail(what string, nr uint64, args ...uint64) {
	b.Add(what, nr, args...)
	b.calls[len(b.calls)-1].mayFail = true
}

// Len is the number of queued calls.
func (b *Batch) Len() int { return len(b.calls) }

// Table returns the batch's table as BatchCode reads it.
func (b *Batch) Table() []byte {
	t := make([]byte, BatchEntrySize*len(b.calls))
	le := binary.LittleEndian
	for i, c := range b.calls {
		e := t[i*BatchEntrySize:]
		le.PutUint64(e, c.nr)
		for j, a := range c.args {
			le.PutUint64(e[8+8*j:], a)
		}
		le.PutUint64(e[56:], notRun)
	}
	return t
}

// Results reads the result slots of table (as read back after the run):
// the return values of the calls, or the error of the first that failed,
// naming it, with the return values of the calls before it.
func (b *Batch) Results(table []byte) ([]uint64, error) {
	if len(table) < BatchEntrySize*len(b.calls) {
		return nil, fmt.Errorf("batch table of %d bytes for %d calls", len(table), len(b.calls))
	}
	out := make([]uint64, len(b.calls))
	for i, c := range b.calls {
		r := binary.LittleEndian.Uint64(table[i*BatchEntrySize+56:])
		if r == notRun {
			return out[:i], fmt.Errorf("%s: not run by the batch (an earlier call stopped it?)", c.what)
		}
		if e := Errno(int64(r)); e != nil && !c.mayFail {
			return out[:i], fmt.Errorf("%s: %w", c.what, e)
		}
		out[i] = r
	}
	return out, nil
}

// RunBatch runs b in the stopped thread tid with BatchCode already at
// code in its memory m: the table is written at tableAddr, run from the
// register template base, read back, and the results (or the failing
// call's error) returned.
func RunBatch(m *Mem, tid int, base Regs, code, tableAddr uint64, b *Batch) ([]uint64, error) {
	wait, err := StartBatch(m, tid, base, code, tableAddr, b)
	if err != nil {
		return nil, err
	}
	return wait()
}

// StartBatch is RunBatch without the wait: the thread runs the batch while
// the tracer goes on with other tracees, and wait (which must be called,
// once) waits for its end and returns RunBatch's results.
func StartBatch(m *Mem, tid int, base Regs, code, tableAddr uint64, b *Batch) (wait func() ([]uint64, error), err error) {
	table := b.Table()
	if err := m.WriteAt(table, tableAddr); err != nil {
		return nil, err
	}
	if err := StartCode(tid, base, code, tableAddr, uint64(b.Len())); err != nil {
		return nil, fmt.Errorf("tid %d: syscall batch: %w", tid, err)
	}
	return func() ([]uint64, error) {
		if err := WaitCode(tid, code, len(BatchCode)); err != nil {
			return nil, fmt.Errorf("tid %d: syscall batch: %w", tid, err)
		}
		if err := m.ReadAt(table, tableAddr); err != nil {
			return nil, err
		}
		res, err := b.Results(table)
		if err != nil {
			return nil, fmt.Errorf("tid %d: %w", tid, err)
		}
		return res, nil
	}, nil
}

// Batch runs b in thread i of a seized process in one go, from the
// injection area: the table goes in the second half of the scratch page, so
// memory arguments of the calls must lie in its first half. It counts as
// one injected call. When a call fails, the results of those before it
// come with the error.
func (r *Remote) Batch(i int, b *Batch) ([]uint64, error) {
	const tableOff = ScratchSize / 2
	if b.Len() == 0 {
		return nil, nil
	}
	if b.Len()*BatchEntrySize > ScratchSize-tableOff {
		return nil, fmt.Errorf("batch of %d calls does not fit the scratch page", b.Len())
	}
	t := r.P.Threads[i]
	table := b.Table()
	addr := r.Scratch + tableOff
	if err := r.Mem.WriteAt(table, addr); err != nil {
		return nil, err
	}
	if err := r.runArea(i, codeBatch, addr, uint64(b.Len())); err != nil {
		return nil, fmt.Errorf("tid %d: syscall batch: %w", t.Tid, err)
	}
	if err := r.Mem.ReadAt(table, addr); err != nil {
		return nil, err
	}
	res, err := b.Results(table)
	if err != nil {
		// the results of the calls before the failing one: what they
		// made (fds, mappings) is the caller's to undo
		return res, fmt.Errorf("tid %d: %w", t.Tid, err)
	}
	return res, nil
}

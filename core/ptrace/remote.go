package ptrace

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Remote runs syscalls inside a seized process from an injection area of
// its own mapped into it (see area.go for how every step survives the
// death of the tracer): code, a scratch page for arguments and results,
// and the rt_sigreturn frame that takes a thread back to where it was.
// Close puts every thread back and unmaps the area.
type Remote struct {
	P       *Process
	Mem     *Mem
	Scratch uint64 // ScratchSize bytes, RW, in the target
	calls   int

	area      uint64 // the injection area (AreaSize bytes)
	boot      uint64 // where the boot code is written (the entry point)
	bootFrame uint64 // where thread 0's boot frame is written
	forget    func() // RecordArea's, for the area mapped
	framed    int    // the thread whose frame is in the area (-1: none)
	parked    bool   // framed thread is parked in the area (mask all blocked)
	seq       uint64 // sequence number of the last run
	stopSig   int    // the signal that ends runs (0: they end in the park)
	// MapProbe tells the mlockall flags for new mappings, as the mapping
	// of the area showed them.
	MapProbe MapProbe
}

// ScratchSize is the size of the scratch area mapped in the target.
const ScratchSize = 4096

// NewRemote prepares syscall injection into p: the area is mapped (from
// the program's entry point, see area.go). The threads keep their
// registers and signal masks.
func NewRemote(p *Process) (*Remote, error) {
	m, err := OpenMem(p.Pid)
	if err != nil {
		return nil, err
	}
	r := &Remote{P: p, Mem: m, framed: -1, stopSig: pickStopSignal(p)}
	if err := r.mapArea(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Call injects a syscall into thread i (0 = leader).
func (r *Remote) Call(i int, what string, nr uint64, args ...uint64) (uint64, error) {
	v, err := r.RawCall(i, nr, args...)
	if err != nil {
		return 0, fmt.Errorf("tid %d: %s: %w", r.P.Threads[i].Tid, what, err)
	}
	if e := Errno(v); e != nil {
		return 0, fmt.Errorf("tid %d: %s: %w", r.P.Threads[i].Tid, what, e)
	}
	return uint64(v), nil
}

// RawCall is Call returning the raw rax (negative errno) without conversion.
func (r *Remote) RawCall(i int, nr uint64, args ...uint64) (int64, error) {
	var b Batch
	b.Add("call", nr, args...)
	table := b.Table()
	addr := r.Scratch + ScratchSize - BatchEntrySize
	if err := r.Mem.WriteAt(table, addr); err != nil {
		return 0, err
	}
	if err := r.runArea(i, codeBatch, addr, 1); err != nil {
		return 0, err
	}
	res := make([]byte, 8)
	if err := r.Mem.ReadAt(res, addr+56); err != nil {
		return 0, err
	}
	v := int64(binary.LittleEndian.Uint64(res))
	if traceInject {
		fmt.Fprintf(os.Stderr, "inject tid %d: syscall %d(%#x) = %d\n", r.P.Threads[i].Tid, nr, args, v)
	}
	return v, nil
}

// Calls is the number of syscalls injected so far.
func (r *Remote) Calls() int { return r.calls }

// Close puts the last thread injected into back and unmaps the area. The
// threads stay stopped (Process.Release resumes them).
func (r *Remote) Close() error {
	err := r.unmapArea()
	r.Mem.Close()
	return err
}

// RequeueStolen queues signals taken out of the queues during the seize back
// into their threads (rt_tgsigqueueinfo sent by the thread to itself, which
// the kernel allows for any si_code).
func (r *Remote) RequeueStolen() error {
	for i, t := range r.P.Threads {
		for _, si := range t.Stolen {
			if err := r.Mem.WriteAt(si, r.Scratch); err != nil {
				return err
			}
			sig := uint64(uint32(si[0]) | uint32(si[1])<<8 | uint32(si[2])<<16 | uint32(si[3])<<24)
			if _, err := r.Call(i, fmt.Sprintf("requeue signal %d", sig), unix.SYS_RT_TGSIGQUEUEINFO, uint64(r.P.Pid), uint64(t.Tid), sig, r.Scratch); err != nil {
				return err
			}
		}
		t.Stolen = nil
	}
	return nil
}

// FirstExec finds the start of the first executable mapping suitable for the
// gadget in /proc/PID/maps text (not vdso/vsyscall).
func FirstExec(maps string) (uint64, bool) {
	for _, l := range strings.Split(maps, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || len(f[1]) < 3 || f[1][2] != 'x' {
			continue
		}
		if len(f) >= 6 && strings.HasPrefix(f[5], "[v") {
			continue
		}
		var start, end uint64
		if _, err := fmt.Sscanf(f[0], "%x-%x", &start, &end); err != nil {
			continue
		}
		return start, true
	}
	return 0, false
}

package ptrace

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Remote runs syscalls inside a seized process without any code of ours in
// it beyond a 4-byte gadget: the gadget is written over the first bytes of the
// first executable mapping (all threads are stopped, so nobody executes
// them), and a scratch page is mapped for arguments and results. Close puts
// the original bytes back and unmaps the scratch page.
type Remote struct {
	P       *Process
	Mem     *Mem
	Gadget  uint64
	Scratch uint64 // one page, RW, in the target
	saved   []byte
	calls   int
}

// ScratchSize is the size of the scratch area mapped in the target.
const ScratchSize = 4096

// NewRemote prepares syscall injection into p: signals blocked, gadget
// written at execAddr (the start of an executable mapping), scratch mapped.
func NewRemote(p *Process, execAddr uint64) (*Remote, error) {
	if err := p.BlockSignals(); err != nil {
		return nil, err
	}
	m, err := OpenMem(p.Pid)
	if err != nil {
		return nil, err
	}
	r := &Remote{P: p, Mem: m, Gadget: execAddr}
	orig := make([]byte, len(Gadget))
	if err := m.ReadAt(orig, execAddr); err != nil {
		m.Close()
		return nil, fmt.Errorf("save code at gadget: %w", err)
	}
	if err := m.WriteAt(Gadget, execAddr); err != nil {
		m.Close()
		return nil, fmt.Errorf("write gadget: %w", err)
	}
	r.saved = orig
	addr, err := r.Call(0, "mmap scratch", unix.SYS_MMAP, 0, ScratchSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		r.Close()
		return nil, err
	}
	r.Scratch = addr
	return r, nil
}

// Injector returns an injector for thread i of the process.
func (r *Remote) injector(i int) *Injector {
	t := r.P.Threads[i]
	if r.P.Quiet {
		t.quietStop = true
	}
	return &Injector{Tid: t.Tid, Addr: r.Gadget, Base: t.Regs, Quiet: r.P.Quiet}
}

// Call injects a syscall into thread i (0 = leader).
func (r *Remote) Call(i int, what string, nr uint64, args ...uint64) (uint64, error) {
	in := r.injector(i)
	v, err := in.Call(what, nr, args...)
	r.calls += in.Count
	if err != nil {
		return 0, fmt.Errorf("tid %d: %w", in.Tid, err)
	}
	return v, nil
}

// RawCall is Call returning the raw rax (negative errno) without conversion.
func (r *Remote) RawCall(i int, nr uint64, args ...uint64) (int64, error) {
	in := r.injector(i)
	v, err := in.Raw(nr, args...)
	r.calls += in.Count
	return v, err
}

// Calls is the number of syscalls injected so far.
func (r *Remote) Calls() int { return r.calls }

// Close unmaps the scratch page and restores the code under the gadget. The
// threads stay stopped (Process.Release resumes them).
func (r *Remote) Close() error {
	var errs []error
	if r.Scratch != 0 {
		if _, err := r.Call(0, "munmap scratch", unix.SYS_MUNMAP, r.Scratch, ScratchSize); err != nil {
			errs = append(errs, err)
		}
		r.Scratch = 0
	}
	if r.saved != nil {
		if err := r.Mem.WriteAt(r.saved, r.Gadget); err != nil {
			errs = append(errs, fmt.Errorf("restore code under gadget: %w", err))
		}
		r.saved = nil
	}
	r.Mem.Close()
	return errors.Join(errs...)
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

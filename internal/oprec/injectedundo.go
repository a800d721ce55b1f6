package oprec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
)

// injectedWait is how long the undo of an Injected item waits for the
// target's threads to leave an injected area: a thread the crash caught
// in one finishes its calls and waits out the injector's park (500 ms,
// see core/ptrace/area.go) before it returns by rt_sigreturn.
const injectedWait = 5 * time.Second

// describe names what in lists, for the sweep's report.
func (in Injected) describe() string {
	return fmt.Sprintf("close %d pipe(s) and unmap %d area(s) that injection left in pid %d", len(in.Pipes), len(in.Areas), in.Target.Pid)
}

// undoInjected closes and unmaps in in.Target, while it runs, what in
// lists and still is what injection made (see Injected): it seizes the
// target, waits until no thread runs in a listed area, and makes the
// close and munmap calls by the injector (an area of its own, removed
// before the target is let go). A target gone took them with it.
func undoInjected(in Injected) (bool, error) {
	if !in.Target.Alive() {
		return false, nil
	}
	if fds, areas := in.present(); len(fds) == 0 && len(areas) == 0 {
		return false, nil
	}
	type result struct {
		did bool
		err error
	}
	done := make(chan result, 1)
	go func() {
		// ptrace requests come from the thread that seized
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		did, err := in.undoSeized()
		done <- result{did, err}
	}()
	r := <-done
	return r.did, r.err
}

// undoSeized is undoInjected on the tracer thread.
func (in Injected) undoSeized() (bool, error) {
	deadline := time.Now().Add(injectedWait)
	for {
		p, err := ptrace.SeizeProcess(in.Target.Pid)
		if err != nil {
			if !in.Target.Alive() {
				return false, nil
			}
			return false, fmt.Errorf("seize pid %d: %w", in.Target.Pid, err)
		}
		if !in.Target.Alive() { // the pid was reused before the seize
			return false, p.Release()
		}
		if tid := in.runningIn(p); tid != 0 {
			rerr := p.Release()
			if rerr != nil || time.Now().After(deadline) {
				return false, errors.Join(fmt.Errorf("thread %d still runs in an injected area", tid), rerr)
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		// stopped: what is checked now stays so until the calls run
		fds, areas := in.present()
		err = removeIn(p, fds, areas)
		if rerr := p.Release(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("release pid %d: %w", in.Target.Pid, rerr))
		}
		return err == nil, err
	}
}

// runningIn returns a thread of p whose instruction pointer lies in one
// of in's areas (0: none).
func (in Injected) runningIn(p *ptrace.Process) int {
	for _, t := range p.Threads {
		for _, a := range in.Areas {
			if t.Regs.Rip >= a.Addr && t.Regs.Rip < a.Addr+a.Size {
				return t.Tid
			}
		}
	}
	return 0
}

// removeIn closes fds and unmaps areas in the seized p by injected calls.
func removeIn(p *ptrace.Process, fds []int, areas []Area) error {
	r, err := ptrace.NewRemote(p)
	if err != nil {
		return fmt.Errorf("injection into pid %d: %w", p.Pid, err)
	}
	var b ptrace.Batch
	var errs []error
	flush := func() {
		if _, err := r.Batch(0, &b); err != nil {
			errs = append(errs, err)
		}
		b = ptrace.Batch{}
	}
	const perBatch = ptrace.ScratchSize / 2 / ptrace.BatchEntrySize
	for _, fd := range fds {
		b.Add(fmt.Sprintf("close fd %d", fd), unix.SYS_CLOSE, uint64(fd))
		if b.Len() == perBatch {
			flush()
		}
	}
	for _, a := range areas {
		b.Add(fmt.Sprintf("munmap %#x (%d bytes)", a.Addr, a.Size), unix.SYS_MUNMAP, a.Addr, a.Size)
		if b.Len() == perBatch {
			flush()
		}
	}
	if b.Len() > 0 {
		flush()
	}
	if err := r.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// present returns the fds and areas of in that are still as injection
// made them in the target: a pair of fds both ends of one pipe, the
// first read-only, the second write-only, both close-on-exec; an area
// covered by anonymous private mappings only. Anything else is the
// program's now and stays.
func (in Injected) present() (fds []int, areas []Area) {
	for _, pr := range in.Pipes {
		if pipePair(in.Target.Pid, pr[0], pr[1]) {
			fds = append(fds, pr[0], pr[1])
		}
	}
	vmas, err := procfs.ReadMaps(in.Target.Pid)
	if err != nil {
		return fds, nil
	}
	for _, a := range in.Areas {
		if anonymousThroughout(vmas, a) && marked(in.Target.Pid, a) {
			areas = append(areas, a)
		}
	}
	return fds, areas
}

// marked reports whether the area starts with its magic, or has not a
// page touched yet (a crash between the mmap and the magic's write).
func marked(pid int, a Area) bool {
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return false
	}
	defer pm.Close()
	ents := make([]byte, a.Size/4096*8)
	if _, err := pm.ReadAt(ents, int64(a.Addr/4096*8)); err != nil {
		return false
	}
	touched := false
	for i := 0; i+8 <= len(ents); i += 8 {
		if binary.LittleEndian.Uint64(ents[i:])&(3<<62) != 0 {
			touched = true
			break
		}
	}
	if !touched {
		return true
	}
	if len(a.Magic) == 0 {
		return false
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return false
	}
	defer mem.Close()
	b := make([]byte, len(a.Magic))
	if _, err := mem.ReadAt(b, int64(a.Addr)); err != nil {
		return false
	}
	return bytes.Equal(b, a.Magic)
}

// pipePair reports whether fds r and w of pid are the read and the write
// end of one pipe, close-on-exec.
func pipePair(pid, r, w int) bool {
	lr, err1 := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, r))
	lw, err2 := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, w))
	if err1 != nil || err2 != nil || lr != lw || !strings.HasPrefix(lr, "pipe:") {
		return false
	}
	fr, ok1 := fdFlags(pid, r)
	fw, ok2 := fdFlags(pid, w)
	return ok1 && ok2 && fr&unix.O_ACCMODE == unix.O_RDONLY && fw&unix.O_ACCMODE == unix.O_WRONLY &&
		fr&unix.O_CLOEXEC != 0 && fw&unix.O_CLOEXEC != 0
}

// fdFlags reads the flags line of /proc/PID/fdinfo/FD (octal).
func fdFlags(pid, fd int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			f, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			return int(f), err == nil
		}
	}
	return 0, false
}

// anonymousThroughout reports whether every byte of a is mapped, by
// private anonymous mappings only.
func anonymousThroughout(vmas []procfs.VMA, a Area) bool {
	at, end := a.Addr, a.Addr+a.Size
	for _, v := range vmas {
		if v.End <= at || v.Start >= end {
			continue
		}
		if v.Start > at || v.Path != "" || v.Inode != 0 || v.Shared {
			return false
		}
		at = v.End
		if at >= end {
			return true
		}
	}
	return false
}

package ptrace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/internal/fault"
)

// RecordArea, when set, is told of each injection area before it is
// mapped (pid, address, size, magic); the function it returns is called once the
// area is unmapped again. The dump sets it to write the area in its
// operation record, so that `ctr-cr cleanup` can unmap an area a crash
// left (internal/oprec, Injected).
// magic is what the area's first bytes will be (areaCode's start).
var RecordArea func(pid int, addr, size uint64, magic []byte) (forget func(), err error)

// Mapping and unmapping the injection area: the only moments code of the
// program (nine bytes at its entry point) and a page of its main stack are
// borrowed.

// bootCode is written at the entry point to map and unmap the area: the
// call, then rt_sigreturn (from a frame at the bottom of the main stack).
var bootCode = []byte{0x0f, 0x05, 0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05}

// auxEntry is AT_ENTRY.
const auxEntry = 9

// bootSite finds where the area is mapped from: the entry point of the
// program (when executable) for the code, and a place for thread 0's frame
// that nothing of the program uses (bootFrameSite).
func bootSite(pid int, mem *Mem, rsp uint64, frameLen int) (code, frame uint64, err error) {
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return 0, 0, err
	}
	vmas := parseMaps(string(maps))
	if aux, err := os.ReadFile(fmt.Sprintf("/proc/%d/auxv", pid)); err == nil {
		for i := 0; i+16 <= len(aux); i += 16 {
			if binary.LittleEndian.Uint64(aux[i:]) == auxEntry {
				e := binary.LittleEndian.Uint64(aux[i+8:])
				if v := vmaOf(vmas, e); v != nil && v.exec && e+uint64(len(bootCode)) <= v.end {
					code = e
				}
			}
		}
	}
	if code == 0 {
		var ok bool
		if code, ok = FirstExec(string(maps)); !ok {
			return 0, 0, errors.New("no executable mapping for syscall injection")
		}
	}
	frame, err = bootFrameSite(pid, mem, vmas, rsp, frameLen)
	return code, frame, err
}

type vma struct {
	start, end  uint64
	write, exec bool
	name        string
}

func parseMaps(maps string) []vma {
	var out []vma
	for _, l := range strings.Split(maps, "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || len(f[1]) < 3 {
			continue
		}
		var v vma
		if _, err := fmt.Sscanf(f[0], "%x-%x", &v.start, &v.end); err != nil {
			continue
		}
		v.write, v.exec = f[1][1] == 'w', f[1][2] == 'x'
		if len(f) >= 6 {
			v.name = f[5]
		}
		out = append(out, v)
	}
	return out
}

func vmaOf(vmas []vma, addr uint64) *vma {
	for i := range vmas {
		if addr >= vmas[i].start && addr < vmas[i].end {
			return &vmas[i]
		}
	}
	return nil
}

// bootCall makes one syscall in thread 0 from the boot code at r.boot,
// with PTRACE_SYSCALL stops (entry, exit), and leaves the thread in the
// exit stop with its original registers and mask. The rt_sigreturn frame
// at r.bootFrame must be in place: a tracer that dies at any point leaves
// the thread to finish the call and return by rt_sigreturn.
func (r *Remote) bootCall(nr uint64, args ...uint64) (uint64, error) {
	t := r.P.Threads[0]
	regs := RestartFixup(t.Regs)
	var a [6]uint64
	copy(a[:], args)
	regs.Rip, regs.Rax, regs.Orig_rax, regs.Rsp = r.boot, nr, ^uint64(0), r.bootFrame+8
	regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if err := SetRegs(t.Tid, &regs); err != nil {
		return 0, err
	}
	if err := SetSigmask(t.Tid, ^uint64(0)); err != nil {
		return 0, err
	}
	fault.Step("inject")
	for _, want := range []uint64{1, 2} {
		var ws unix.WaitStatus
		for retry := 0; ; retry++ {
			if err := Raw(unix.PTRACE_SYSCALL, t.Tid, 0, 0); err != nil {
				return 0, fmt.Errorf("ptrace syscall tid %d: %w", t.Tid, err)
			}
			fault.Step("inject")
			var err error
			ws, err = Wait(t.Tid)
			if err != nil {
				return 0, err
			}
			if ws.Stopped() && int(ws)>>16 == EventStop && retry < 8 {
				continue // a pending job-control notification
			}
			if !ws.Stopped() || ws.StopSignal()&0x7f != unix.SIGTRAP {
				return 0, fmt.Errorf("injected syscall %d in tid %d: %s", nr, t.Tid, Describe(ws))
			}
			break
		}
		t.quietStop = true // a syscall stop from here on
		if op, err := syscallStopKind(t.Tid); err != nil {
			return 0, err
		} else if op != want {
			return 0, fmt.Errorf("injected syscall %d in tid %d: stop of kind %d, want %d (%s)", nr, t.Tid, op, want, describeStop(t.Tid, ws))
		}
		fault.Step("inject")
	}
	out, err := GetRegs(t.Tid)
	if err != nil {
		return 0, err
	}
	r.calls++
	// back to the original state (mask first: never the original
	// registers with every signal blocked)
	if err := SetSigmask(t.Tid, t.Sigmask); err != nil {
		return 0, err
	}
	back := resumeRegs(t)
	if err := SetRegs(t.Tid, &back); err != nil {
		return 0, err
	}
	if out.Rip != r.boot+2 {
		return 0, fmt.Errorf("injected syscall %d in tid %d: stopped at rip %#x, want %#x", nr, t.Tid, out.Rip, r.boot+2)
	}
	return out.Rax, nil
}

// withBoot writes the boot code and thread 0's frame, runs f, and puts
// the borrowed bytes back (the code's first: a crash in between leaves
// only the frame's bytes, in stack the program does not use).
func (r *Remote) withBoot(f func() error) error {
	t := r.P.Threads[0]
	xs, err := t.XState()
	if err != nil {
		return err
	}
	frameLen := frameSize(xs)
	code, frame, err := bootSite(r.P.Pid, r.Mem, t.Regs.Rsp, frameLen)
	if err != nil {
		return err
	}
	r.boot, r.bootFrame = code, frame
	if traceInject {
		fmt.Fprintf(os.Stderr, "inject pid %d: boot code %#x, frame %#x (%d bytes), rsp %#x\n", r.P.Pid, code, frame, frameLen, t.Regs.Rsp)
	}
	savedCode := make([]byte, len(bootCode))
	if err := r.Mem.ReadAt(savedCode, code); err != nil {
		return fmt.Errorf("save code at the entry point: %w", err)
	}
	savedFrame := make([]byte, frameLen)
	if err := r.Mem.ReadAt(savedFrame, frame); err != nil {
		return fmt.Errorf("save stack under the frame: %w", err)
	}
	fb := buildFrame(frame, RestartFixup(t.Regs), t.Sigmask, xs)
	markBootFrame(fb)
	if err := r.Mem.WriteAt(fb, frame); err != nil {
		return err
	}
	fault.Step("inject")
	if err := r.Mem.WriteAt(bootCode, code); err != nil {
		return fmt.Errorf("write boot code: %w", err)
	}
	ferr := f()
	if err := r.Mem.WriteAt(savedCode, code); err != nil && ferr == nil {
		ferr = fmt.Errorf("restore code at the entry point: %w", err)
	}
	fault.Step("inject")
	if err := r.Mem.WriteAt(savedFrame, frame); err != nil && ferr == nil {
		ferr = fmt.Errorf("restore stack under the frame: %w", err)
	}
	return ferr
}

// mapArea maps the area (its code page read-execute, the rest read-write)
// and writes the code and control block.
func (r *Remote) mapArea() error {
	before, berr := VmLckKB(r.P.Pid)
	want, err := procfs.FreeGap(r.P.Pid, AreaSize)
	if err != nil {
		return fmt.Errorf("injection area: %w", err)
	}
	forget := func() {}
	if RecordArea != nil {
		if forget, err = RecordArea(r.P.Pid, want, AreaSize, areaCode[:16]); err != nil {
			return fmt.Errorf("injection area: %w", err)
		}
	}
	err = r.withBoot(func() error {
		addr, err := r.bootCall(unix.SYS_MMAP, want, AreaSize, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
		if err != nil {
			return fmt.Errorf("mmap injection area: %w", err)
		}
		if e := Errno(int64(addr)); e != nil {
			return fmt.Errorf("mmap injection area: %w", e)
		}
		r.area = addr
		if addr != want { // (a kernel without MAP_FIXED_NOREPLACE takes it for a hint)
			return fmt.Errorf("mmap injection area: at %#x, want %#x", addr, want)
		}
		return nil
	})
	if err != nil {
		if r.area == 0 {
			forget()
		}
		return err
	}
	r.forget = forget
	r.MapProbe = MapProbe{LockedBefore: before, Err: berr}
	if berr == nil {
		r.MapProbe.LockedAfter, r.MapProbe.Err = VmLckKB(r.P.Pid)
	}
	if r.MapProbe.Err == nil {
		r.MapProbe.Present, r.MapProbe.Err = pagePresent(r.P.Pid, r.area+areaProbeOff)
	}
	if err := r.Mem.WriteAt(areaCode, r.area+areaCodeOff); err != nil {
		return err
	}
	ctl := make([]byte, 32)
	binary.LittleEndian.PutUint64(ctl[16:], uint64(parkTimeout/time.Second))
	binary.LittleEndian.PutUint64(ctl[24:], uint64(parkTimeout%time.Second))
	if err := r.Mem.WriteAt(ctl, r.area+areaCtlOff); err != nil {
		return err
	}
	r.framed = -1
	r.Scratch = r.area + areaScratchOff
	// the thread writes its results and the sequence number
	if _, err := r.Call(0, "mprotect injection area", unix.SYS_MPROTECT, r.area+areaScratchOff, AreaSize-areaScratchOff, unix.PROT_READ|unix.PROT_WRITE); err != nil {
		return err
	}
	return nil
}

// unmapArea puts every thread back and unmaps the area (from the boot
// code: not from the area itself, which would vanish under the thread).
func (r *Remote) unmapArea() error {
	if r.area == 0 {
		return nil
	}
	var errs []error
	if err := r.unpark(); err != nil {
		errs = append(errs, err)
	}
	err := r.withBoot(func() error {
		v, err := r.bootCall(unix.SYS_MUNMAP, r.area, AreaSize)
		if err == nil {
			err = Errno(int64(v))
		}
		if err != nil {
			return fmt.Errorf("munmap injection area: %w", err)
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	} else if r.forget != nil {
		r.forget()
	}
	r.area, r.Scratch, r.forget = 0, 0, nil
	return errors.Join(errs...)
}

// MapProbe is what the mapping of the area showed about the mlockall
// flags that apply to new mappings (mm->def_flags, not shown in /proc):
// with MCL_FUTURE the area is accounted locked (VmLck grows); without
// MCL_ONFAULT it is also populated at once (an untouched page of it is
// present).
type MapProbe struct {
	LockedBefore, LockedAfter uint64 // VmLck in kB
	Present                   bool
	Err                       error
}

// VmLckKB is VmLck of /proc/PID/status (memory locked), in kB.
func VmLckKB(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmLck:" {
			return strconv.ParseUint(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmLck line", pid)
}

// pagePresent reports whether the page at addr is present in pid's page
// tables (/proc/PID/pagemap bit 63).
func pagePresent(pid int, addr uint64) (bool, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return false, err
	}
	defer f.Close()
	var e [8]byte
	if _, err := f.ReadAt(e[:], int64(addr/4096*8)); err != nil {
		return false, err
	}
	return binary.LittleEndian.Uint64(e[:])&(1<<63) != 0, nil
}

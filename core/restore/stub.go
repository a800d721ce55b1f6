package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/ptrace"
)

// StubArg is the argument ctr-cr is re-executed with to become a restore
// stub. The stub never runs a single instruction of its own: it is taken over
// at its post-exec stop. If it ever runs (tracer gone), main exits at once.
const StubArg = "__ctr-cr-restore-stub"

// stubOptions: the stub dies with us (EXITKILL) until it is fully restored
// and detached; clone events auto-attach new threads and children; injected
// calls bypass the seccomp filters we install ourselves.
const stubOptions = unix.PTRACE_O_EXITKILL | unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEFORK | ptrace.OptSuspendSeccomp

// PidMethod selects how the restored process gets its pid.
type PidMethod string

const (
	// PidClone3 injects clone3 with set_tid into a helper stub.
	PidClone3 PidMethod = "clone3"
	// PidNsLastPid rewinds /proc/sys/kernel/ns_last_pid under a lock.
	PidNsLastPid PidMethod = "ns_last_pid"
)

// stub is a process under our control that becomes the restored task.
type stub struct {
	pid    int
	regs   ptrace.Regs // at its stop, the template for injection
	gadget uint64      // a `syscall` instruction in it
	helper *exec.Cmd   // ns_last_pid method: the stub is this exec'd child
	pidfd  int         // a pidfd of ours the stub inherited, or -1
}

// startHelper execs the stub program (stubelf.go) under PTRACE_TRACEME and returns it at
// its post-exec stop with a gadget at its entry point and signals blocked.
// afterFork, when not nil, runs as soon as the child exists.
func startHelper(afterFork func()) (*exec.Cmd, ptrace.Regs, error) {
	var regs ptrace.Regs
	path, argv := stubCommand()
	c := &exec.Cmd{Path: path, Args: argv}
	c.SysProcAttr = &syscall.SysProcAttr{Ptrace: true}
	err := c.Start()
	if afterFork != nil {
		afterFork()
	}
	if err != nil {
		return nil, regs, fmt.Errorf("start stub: %w", err)
	}
	pid := c.Process.Pid
	fail := func(err error) (*exec.Cmd, ptrace.Regs, error) {
		c.Process.Kill()
		c.Wait()
		return nil, regs, err
	}
	ws, err := ptrace.Wait(pid)
	if err != nil {
		return fail(err)
	}
	if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP {
		return fail(fmt.Errorf("stub %d: %s instead of its exec stop", pid, ptrace.Describe(ws)))
	}
	if regs, err = armStub(pid); err != nil {
		return fail(err)
	}
	return c, regs, nil
}

// armStub takes a freshly exec'd stub at its stop before its first
// instruction: stub options, every signal blocked, and the gadget written
// at its entry point (it never runs its own code). It returns the
// registers there, the template for injection.
func armStub(pid int) (ptrace.Regs, error) {
	var regs ptrace.Regs
	if err := ptrace.SetOptions(pid, stubOptions); err != nil {
		return regs, err
	}
	if err := ptrace.SetSigmask(pid, ptrace.InjectMask); err != nil {
		return regs, err
	}
	regs, err := ptrace.GetRegs(pid)
	if err != nil {
		return regs, err
	}
	m, err := ptrace.OpenMem(pid)
	if err != nil {
		return regs, err
	}
	defer m.Close()
	return regs, m.WriteAt(ptrace.Gadget, regs.Rip)
}

func killCmd(c *exec.Cmd) {
	if c == nil || c.Process == nil {
		return
	}
	c.Process.Kill()
	c.Wait()
}

// newStub creates the stub with pid; with pidns, as pid 1 of a new pid
// namespace with pid outer in ours (and, with mntns, in a new mount
// namespace too).
func newStub(pid, outer int, method PidMethod, pidns, mntns bool) (*stub, error) {
	if pidns {
		if method == PidNsLastPid {
			return nil, errors.New("a pid namespace init is restored with clone3 set_tid only")
		}
		return stubClone3(pid, true, outer, mntns)
	}
	switch method {
	case PidNsLastPid:
		return stubNsLastPid(pid)
	default:
		s, err := stubClone3(pid, false, 0, false)
		if err != nil && (errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.E2BIG)) {
			return stubNsLastPid(pid)
		}
		return s, err
	}
}

// cloneArgs is struct clone_args (88 bytes, CLONE_ARGS_SIZE_VER2).
func cloneArgs(flags uint64, exitSignal uint64, setTid uint64, nTid int) []byte {
	b := make([]byte, 88)
	binary.LittleEndian.PutUint64(b[0:], flags)
	binary.LittleEndian.PutUint64(b[32:], exitSignal)
	binary.LittleEndian.PutUint64(b[64:], setTid)
	binary.LittleEndian.PutUint64(b[72:], uint64(nTid))
	return b
}

// stubClone3 starts a helper and injects clone3(CLONE_PARENT, set_tid=[pid])
// into it: the child, a copy of the untouched helper, gets exactly pid and
// has ctr-cr as its parent. The helper is then killed.
func stubClone3(pid int, pidns bool, outer int, mntns bool) (*stub, error) {
	h, regs, err := startHelper(nil)
	if err != nil {
		return nil, err
	}
	hp := h.Process.Pid
	in := &ptrace.Injector{Tid: hp, Addr: regs.Rip, Base: regs}
	scratch, err := in.Call("mmap", unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		killCmd(h)
		return nil, fmt.Errorf("stub %d: %w", hp, err)
	}
	m, err := ptrace.OpenMem(hp)
	if err != nil {
		killCmd(h)
		return nil, err
	}
	// Inside a new pid namespace the stub cannot pidfd_open us: open it
	// here, the child inherits it.
	pidfd := -1
	flags := uint64(unix.CLONE_PARENT)
	if pidns {
		fd, err := in.Call("pidfd_open(restorer)", unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0)
		if err != nil {
			killCmd(h)
			return nil, err
		}
		pidfd = int(fd)
		flags |= unix.CLONE_NEWPID
		if mntns {
			flags |= unix.CLONE_NEWNS
		}
	}
	// exit_signal must be 0 with CLONE_PARENT: the child inherits ours (SIGCHLD)
	ids := []int32{int32(pid)}
	if pidns {
		ids = append(ids, int32(outer)) // nested: [in the new ns, in ours]
	}
	args := cloneArgs(flags, 0, scratch+128, len(ids))
	tid := setTids(ids)
	err = m.WriteAt(args, scratch)
	if err == nil {
		err = m.WriteAt(tid, scratch+128)
	}
	m.Close()
	if err != nil {
		killCmd(h)
		return nil, err
	}
	child, err := injectClone(hp, in, scratch, 88)
	if err != nil {
		killCmd(h)
		return nil, fmt.Errorf("clone3 with set_tid %d: %w", pid, err)
	}
	ws, err := ptrace.Wait(child)
	if err == nil && !ws.Stopped() {
		err = fmt.Errorf("new task %d: %s", child, ptrace.Describe(ws))
	}
	killCmd(h)
	if err != nil {
		unix.Kill(child, unix.SIGKILL)
		reap(child)
		return nil, err
	}
	cregs, err := ptrace.GetRegs(child)
	if err != nil {
		unix.Kill(child, unix.SIGKILL)
		reap(child)
		return nil, err
	}
	return &stub{pid: child, regs: cregs, gadget: regs.Rip, pidfd: pidfd}, nil
}

// injectClone injects clone3(args at addr) into tid and returns the new
// task's id once the call has completed in tid. The new task is
// auto-attached and starts in a stop the caller must wait for.
func injectClone(tid int, in *ptrace.Injector, addr uint64, size uint64) (int, error) {
	r := in.Base
	r.Rip, r.Rax, r.Orig_rax, r.Rdi, r.Rsi = in.Addr, unix.SYS_CLONE3, ^uint64(0), addr, size
	if err := ptrace.SetRegs(tid, &r); err != nil {
		return 0, err
	}
	if err := ptrace.Raw(unix.PTRACE_SINGLESTEP, tid, 0, 0); err != nil {
		return 0, fmt.Errorf("singlestep: %w", err)
	}
	ws, err := ptrace.Wait(tid)
	if err != nil {
		return 0, err
	}
	ev := int(ws) >> 16
	if !ws.Stopped() || (ev != unix.PTRACE_EVENT_FORK && ev != unix.PTRACE_EVENT_CLONE) {
		out, _ := ptrace.GetRegs(tid)
		if e := ptrace.Errno(int64(out.Rax)); e != nil && ws.Stopped() {
			return 0, e
		}
		return 0, fmt.Errorf("tid %d: %s instead of a clone event", tid, ptrace.Describe(ws))
	}
	msg, err := ptrace.GetEventMsg(tid)
	if err != nil {
		return 0, err
	}
	// finish the syscall in the caller
	if err := ptrace.Raw(unix.PTRACE_SINGLESTEP, tid, 0, 0); err != nil {
		return 0, fmt.Errorf("singlestep: %w", err)
	}
	if _, err := ptrace.Wait(tid); err != nil {
		return 0, err
	}
	in.Count++
	return int(msg), nil
}

func reap(pid int) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || ws.Exited() || ws.Signaled() {
			return
		}
	}
}

// stubNsLastPid makes the kernel hand out pid next by rewinding the
// host-global ns_last_pid cursor under the lock CRIU also takes, and puts the
// cursor back right after so other forks keep allocating above it. Any fork
// on the host (or a new thread of ours) between the rewind and our fork
// takes the pid first: then the attempt is retried a few times.
func stubNsLastPid(pid int) (*stub, error) {
	var err error
	for attempt := 0; attempt < 8; attempt++ {
		var s *stub
		if s, err = stubNsLastPidOnce(pid); err == nil {
			return s, nil
		}
		if !errors.Is(err, errPidRace) {
			return nil, err
		}
		if !waitPidFree(pid, time.Second) {
			return nil, fmt.Errorf("pid %d was taken by another task during the restore", pid)
		}
	}
	return nil, err
}

var errPidRace = errors.New("another task took it")

// waitPidFree reports whether pid is free, waiting up to d for it: the task
// that took it in a race is usually a short-lived fork of someone else's.
func waitPidFree(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func stubNsLastPidOnce(pid int) (*stub, error) {
	var (
		h    *exec.Cmd
		regs ptrace.Regs
		herr error
	)
	err := withLastPid(pid, func(putBack func()) {
		h, regs, herr = startHelper(putBack)
	})
	if err != nil {
		return nil, err
	}
	if herr != nil {
		return nil, herr
	}
	if h.Process.Pid != pid {
		got := h.Process.Pid
		killCmd(h)
		return nil, fmt.Errorf("ns_last_pid: got pid %d instead of %d: %w", got, pid, errPidRace)
	}
	return &stub{pid: pid, regs: regs, gadget: regs.Rip, helper: h, pidfd: -1}, nil
}

// warmThreads makes the Go runtime start its spare OS threads now: a
// blocking syscall hands its P to another thread, creating one if none is
// idle, and a thread created while ns_last_pid is rewound takes a pid (or a
// tid) we are about to ask for. Idle threads are kept and reused.
func warmThreads() {
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ts := unix.Timespec{Nsec: 2e6}
			unix.Nanosleep(&ts, nil)
		}()
	}
	wg.Wait()
}

// withLastPid rewinds the host-global ns_last_pid cursor so that the next
// pid handed out is pid, under the lock CRIU also takes, and runs create,
// which must create the task and call putBack right after: the cursor goes
// back to where it was (when that is above pid), so other forks on the host
// keep allocating above the pids being restored.
func withLastPid(pid int, create func(putBack func())) error {
	warmThreads()
	f, err := os.OpenFile("/proc/sys/kernel/ns_last_pid", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("ns_last_pid: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock ns_last_pid: %w", err)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	buf := make([]byte, 32)
	n, err := f.ReadAt(buf, 0)
	if n == 0 {
		return fmt.Errorf("read ns_last_pid: %w", err)
	}
	prev, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		return fmt.Errorf("read ns_last_pid: %w", err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(pid-1)), 0); err != nil {
		return fmt.Errorf("write ns_last_pid: %w", err)
	}
	done := false
	putBack := func() {
		if !done && prev > pid {
			f.WriteAt([]byte(strconv.Itoa(prev)), 0)
		}
		done = true
	}
	create(putBack)
	putBack()
	return nil
}

// setTids encodes a set_tid array (innermost namespace first).
func setTids(ids []int32) []byte {
	b := make([]byte, 4*len(ids))
	for i, id := range ids {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(id))
	}
	return b
}

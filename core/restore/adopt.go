package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/ptrace"
)

// stubAdopt turns the existing process pid (Options.Adopt: pid 1 of a pid
// namespace the caller made, waiting; a container runtime's init, a
// sandbox) into a restore stub: its leader is seized, the stub program (stubelf.go) is
// written into a memfd of its own and exec'd there (execveat), which ends its other
// threads; the stub is taken at its exec stop, still pid 1 in the same
// namespaces, cgroups and root, with the start time the runtime recorded.
//
// Inside that pid namespace the stub cannot pidfd_open ctr-cr, which it
// needs to pull the restored fds (pidfd_getfd): a pidfd of ours is passed
// to it with SCM_RIGHTS over an abstract unix socket that ctr-cr binds in
// the stub's network namespace.
func stubAdopt(pid int) (*stub, error) {
	if err := ptrace.Seize(pid, unix.PTRACE_O_TRACEEXEC|unix.PTRACE_O_EXITKILL); err != nil {
		return nil, fmt.Errorf("adopt pid %d: seize: %w", pid, err)
	}
	fail := func(err error) (*stub, error) {
		unix.Kill(pid, unix.SIGKILL)
		return nil, fmt.Errorf("adopt pid %d: %w", pid, err)
	}
	if err := ptrace.Interrupt(pid); err != nil {
		return fail(err)
	}
	if err := waitEvent(pid, ptrace.EventStop, "seize"); err != nil {
		return fail(err)
	}
	if err := ptrace.SetSigmask(pid, ptrace.InjectMask); err != nil {
		return fail(err)
	}
	regs, err := ptrace.GetRegs(pid)
	if err != nil {
		return fail(err)
	}
	m, err := ptrace.OpenMem(pid)
	if err != nil {
		return fail(err)
	}
	defer m.Close()
	// Whatever runs at rip is never resumed: it becomes the gadget.
	if err := m.WriteAt(ptrace.Gadget, regs.Rip); err != nil {
		return fail(err)
	}
	in := &contInjector{pid: pid, base: regs}
	scratch, err := in.Call("mmap", unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return fail(err)
	}
	// argv = {"ctr-cr", StubArg, NULL}, envp = {NULL}, strings after them
	buf := make([]byte, 256)
	name := "ctr-cr-stub\x00"
	copy(buf[128:], name)
	arg0 := "ctr-cr\x00"
	copy(buf[160:], arg0)
	copy(buf[176:], StubArg+"\x00")
	binary.LittleEndian.PutUint64(buf[0:], scratch+160)
	binary.LittleEndian.PutUint64(buf[8:], scratch+176)
	// buf[16:24] NULL ends argv; buf[32:40] NULL is envp
	if err := m.WriteAt(buf, scratch); err != nil {
		return fail(err)
	}
	mfd, err := in.Call("memfd_create", unix.SYS_MEMFD_CREATE, scratch+128, mfdExec)
	if errors.Is(err, unix.EINVAL) { // before 6.3: no MFD_EXEC, every memfd is executable
		mfd, err = in.Call("memfd_create", unix.SYS_MEMFD_CREATE, scratch+128, 0)
	}
	if err != nil {
		return fail(err)
	}
	if err := writeStub(pid, int(mfd)); err != nil {
		return fail(err)
	}
	// execveat(mfd, "", argv, envp, AT_EMPTY_PATH): the event stop comes
	// once the new image is in place (the other threads are gone)
	r := regs
	r.Rip, r.Rax, r.Orig_rax = regs.Rip, unix.SYS_EXECVEAT, ^uint64(0)
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8 = mfd, scratch+24, scratch, scratch+32, unix.AT_EMPTY_PATH // "" at scratch+24
	if err := ptrace.SetRegs(pid, &r); err != nil {
		return fail(err)
	}
	if err := ptrace.Cont(pid, 0); err != nil {
		return fail(err)
	}
	if err := waitEvent(pid, unix.PTRACE_EVENT_EXEC, "exec of the stub"); err != nil {
		return fail(err)
	}
	// The event stop is inside execveat: run to its syscall-exit stop, so
	// that the first injected single step is not taken by the exit report.
	if err := ptrace.Raw(unix.PTRACE_SYSCALL, pid, 0, 0); err != nil {
		return fail(err)
	}
	if ws, err := ptrace.Wait(pid); err != nil {
		return fail(err)
	} else if !ws.Stopped() || ws.StopSignal()&0x7f != unix.SIGTRAP {
		return fail(fmt.Errorf("after the exec: %s", ptrace.Describe(ws)))
	}
	if regs, err = armStub(pid); err != nil {
		return fail(err)
	}
	m2, err := ptrace.OpenMem(pid)
	if err != nil {
		return fail(err)
	}
	defer m2.Close()
	s := &stub{pid: pid, regs: regs, gadget: regs.Rip, pidfd: -1}
	in2 := &ptrace.Injector{Tid: pid, Addr: regs.Rip, Base: regs}
	if s.pidfd, err = passPidfd(pid, in2, m2); err != nil {
		return fail(err)
	}
	return s, nil
}

// waitEvent waits until pid reports the ptrace event stop ev, suppressing
// the signal-delivery stops on the way (the process is about to be
// replaced); a SIGTRAP or SIGSEGV stop instead means the injected call went
// wrong.
func waitEvent(pid, ev int, what string) error {
	for {
		ws, err := ptrace.Wait(pid)
		if err != nil {
			return err
		}
		if !ws.Stopped() {
			return fmt.Errorf("%s: %s", what, ptrace.Describe(ws))
		}
		if int(ws)>>16 == ev {
			return nil
		}
		if sig := ws.StopSignal(); int(ws)>>16 == 0 && (sig == unix.SIGTRAP || sig == unix.SIGSEGV) {
			out, _ := ptrace.GetRegs(pid)
			return fmt.Errorf("%s failed: %s, rax %d", what, ptrace.Describe(ws), int64(out.Rax))
		}
		if err := ptrace.Cont(pid, 0); err != nil {
			return err
		}
	}
}

// passPidfd gives the stub pid a pidfd of ctr-cr and returns its number
// there: ctr-cr listens on an abstract unix socket in the stub's network
// namespace, the stub connects (injected) and receives the pidfd with
// SCM_RIGHTS (injected recvmsg).
func passPidfd(pid int, in *ptrace.Injector, m *ptrace.Mem) (int, error) {
	self, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(self)
	name := fmt.Sprintf("ctr-cr-pidfd-%d-%d", os.Getpid(), time.Now().UnixNano())
	ls, err := listenIn(pid, name)
	if err != nil {
		return -1, err
	}
	defer unix.Close(ls)
	scratch, err := in.Call("mmap", unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return -1, err
	}
	sk, err := in.Call("socket", unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	// struct sockaddr_un with an abstract name at scratch
	sa := make([]byte, 2+1+len(name))
	binary.LittleEndian.PutUint16(sa, unix.AF_UNIX)
	copy(sa[3:], name)
	if err := m.WriteAt(sa, scratch); err != nil {
		return -1, err
	}
	if _, err := in.Call("connect", unix.SYS_CONNECT, sk, scratch, uint64(len(sa))); err != nil {
		return -1, err
	}
	c, _, err := unix.Accept4(ls, unix.SOCK_CLOEXEC)
	if err != nil {
		return -1, err
	}
	defer unix.Close(c)
	if err := unix.Sendmsg(c, []byte{0}, unix.UnixRights(self), nil, 0); err != nil {
		return -1, err
	}
	// struct msghdr at scratch+256, iovec at +320, data at +336, cmsg at +384
	cmsgLen := unix.CmsgSpace(4)
	hdr := make([]byte, 56)
	binary.LittleEndian.PutUint64(hdr[16:], scratch+320) // msg_iov
	binary.LittleEndian.PutUint64(hdr[24:], 1)           // msg_iovlen
	binary.LittleEndian.PutUint64(hdr[32:], scratch+384) // msg_control
	binary.LittleEndian.PutUint64(hdr[40:], uint64(cmsgLen))
	iov := make([]byte, 16)
	binary.LittleEndian.PutUint64(iov[0:], scratch+336)
	binary.LittleEndian.PutUint64(iov[8:], 1)
	if err := m.WriteAt(hdr, scratch+256); err != nil {
		return -1, err
	}
	if err := m.WriteAt(iov, scratch+320); err != nil {
		return -1, err
	}
	if _, err := in.Call("recvmsg", unix.SYS_RECVMSG, sk, scratch+256, unix.MSG_CMSG_CLOEXEC); err != nil {
		return -1, err
	}
	cm := make([]byte, cmsgLen)
	if err := m.ReadAt(cm, scratch+384); err != nil {
		return -1, err
	}
	msgs, err := unix.ParseSocketControlMessage(cm)
	if err != nil || len(msgs) != 1 {
		return -1, fmt.Errorf("pidfd not received: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return -1, fmt.Errorf("pidfd not received: %v", err)
	}
	in.Call("close socket", unix.SYS_CLOSE, sk)
	in.Call("munmap", unix.SYS_MUNMAP, scratch, 4096)
	return fds[0], nil
}

// listenIn binds a listening abstract unix socket named name in the network
// namespace of pid (from a thread that enters it and goes back).
func listenIn(pid int, name string) (int, error) {
	type res struct {
		fd  int
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := func() (int, error) {
			self, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return -1, err
			}
			defer unix.Close(self)
			ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return -1, err
			}
			defer unix.Close(ns)
			if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
				return -1, err
			}
			fd, serr := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if serr == nil {
				if serr = unix.Bind(fd, &unix.SockaddrUnix{Name: "@" + name}); serr == nil {
					serr = unix.Listen(fd, 1)
				}
				if serr != nil {
					unix.Close(fd)
				}
			}
			if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
				// the thread stays locked and ends with this goroutine
				return -1, errors.Join(serr, err)
			}
			runtime.UnlockOSThread()
			return fd, serr
		}()
		ch <- res{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		return -1, fmt.Errorf("socket in the network namespace of pid %d: %w", pid, r.err)
	}
	return r.fd, nil
}

// contInjector injects syscalls into a thread whose other threads still
// run (an adopted process before it is replaced): the gadget's int3 after the
// syscall ends each call under PTRACE_CONT, and signal-delivery stops in
// between are suppressed (the process is about to be replaced).
type contInjector struct {
	pid  int
	base ptrace.Regs // at the seize stop; rip is the gadget
}

func (in *contInjector) Call(what string, nr uint64, args ...uint64) (uint64, error) {
	r := in.base
	var a [6]uint64
	copy(a[:], args)
	r.Rax, r.Orig_rax = nr, ^uint64(0)
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if err := ptrace.SetRegs(in.pid, &r); err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	sig := 0
	for i := 0; i < 100; i++ {
		if err := ptrace.Cont(in.pid, sig); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		ws, err := ptrace.Wait(in.pid)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		if !ws.Stopped() {
			return 0, fmt.Errorf("%s: %s", what, ptrace.Describe(ws))
		}
		if ws.StopSignal() != unix.SIGTRAP || int(ws)>>16 != 0 {
			continue // a signal or event stop: suppressed
		}
		out, err := ptrace.GetRegs(in.pid)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		if out.Rip != in.base.Rip+3 {
			return 0, fmt.Errorf("%s: trapped at rip %#x, want %#x", what, out.Rip, in.base.Rip+3)
		}
		if e := ptrace.Errno(int64(out.Rax)); e != nil {
			return 0, fmt.Errorf("%s: %w", what, e)
		}
		return out.Rax, nil
	}
	return 0, fmt.Errorf("%s: no end after 100 stops", what)
}

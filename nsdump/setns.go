// Package nsdump captures and restores the state of Linux namespaces for
// ctr-cr's container layer. This part covers the UTS namespace (hostname,
// domainname) and the IPC namespace (SysV shared memory, semaphores, message
// queues and the per-namespace ipc sysctls).
//
// Everything here acts on a namespace by entering it with setns(2) on a
// dedicated, locked OS thread that is never handed back to the Go scheduler:
// the thread ends with the work, so no goroutine ever runs in a foreign
// namespace (or with changed credentials) by accident. The package never
// forks processes.
//
// The captured state is plain Go structs with json tags. State read back
// from an image must go through Validate before it is restored.
package nsdump

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// NSPath returns the path of namespace file kind ("ipc", "uts", ...) of
// process pid: /proc/PID/ns/KIND.
func NSPath(pid int, kind string) string {
	return "/proc/" + strconv.Itoa(pid) + "/ns/" + kind
}

// RunInNS opens the namespace file at path (a /proc/PID/ns/X link, a bind
// mounted namespace file or /proc/self/fd/N) and calls RunInNSFD with it.
func RunInNS(path string, nstype int, fn func() error) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	return RunInNSFD(fd, nstype, fn)
}

// RunInNSFD runs fn on a fresh OS thread that has joined the namespace
// open at fd with setns(fd, nstype) (nstype is e.g. unix.CLONE_NEWIPC or
// unix.CLONE_NEWUTS; 0 accepts any type, but passing the type makes the
// kernel check that fd is the namespace the caller meant). fn's result is
// returned. The thread stays locked and is terminated by the Go runtime
// when fn returns (after a best-effort setns back to its own namespace),
// so fn may also change per-thread state (credentials) without undoing it. fn must not start goroutines that expect to share
// the namespace: only the calling goroutine is in it. A panic in fn is
// propagated to the caller.
func RunInNSFD(fd int, nstype int, fn func() error) error {
	type result struct {
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: the thread dies when this goroutine returns.
		runtime.LockOSThread()
		var res result
		defer func() {
			if p := recover(); p != nil {
				res.panic = p
			}
			done <- res
		}()
		// The thread's own namespace, to go back to on the way out: the
		// Go runtime does not end a locked main thread but parks it for
		// good, and it should not keep the namespace alive meanwhile.
		back := -1
		if kind := nsKind(nstype); kind != "" {
			if b, err := unix.Open("/proc/thread-self/ns/"+kind, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
				back = b
				defer func() {
					setns(back, nstype)
					unix.Close(back)
				}()
			}
		}
		if err := setns(fd, nstype); err != nil {
			res.err = fmt.Errorf("setns(%s): %w", nsTypeName(nstype), err)
			return
		}
		res.err = fn()
	}()
	res := <-done
	if res.panic != nil {
		panic(res.panic)
	}
	return res.err
}

func setns(fd, nstype int) error {
	for {
		err := unix.Setns(fd, nstype)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// nsKind is the /proc/PID/ns name of a CLONE_NEW* type whose setns works
// in a multithreaded process, or "".
func nsKind(t int) string {
	switch t {
	case unix.CLONE_NEWIPC, unix.CLONE_NEWUTS, unix.CLONE_NEWNET:
		return nsTypeName(t)
	}
	return ""
}

func nsTypeName(t int) string {
	switch t {
	case unix.CLONE_NEWIPC:
		return "ipc"
	case unix.CLONE_NEWUTS:
		return "uts"
	case unix.CLONE_NEWNET:
		return "net"
	case unix.CLONE_NEWNS:
		return "mnt"
	case unix.CLONE_NEWPID:
		return "pid"
	case 0:
		return "any"
	}
	return fmt.Sprintf("%#x", t)
}

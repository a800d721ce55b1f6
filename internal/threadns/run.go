package threadns

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/linux"
)

// Locked runs fn on a new goroutine locked to its OS thread and returns
// fn's error; a panic in fn is raised again in the caller.
//
// The goroutine never unlocks its thread, so the Go runtime ends the thread
// with the goroutine: it is never handed back to the scheduler, and whatever
// fn changed on it (namespaces, fs root, credentials) dies with it. This is
// the one contract of every run-in-a-namespace helper here; fn must not
// start goroutines that expect to share the thread's state.
func Locked(fn func() error) error {
	type result struct {
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		var res result
		defer func() {
			if p := recover(); p != nil {
				res.panic = p
			}
			done <- res
		}()
		res.err = fn()
	}()
	res := <-done
	if res.panic != nil {
		panic(res.panic)
	}
	return res.err
}

// RunInPath opens the namespace file at path (a /proc/PID/ns/X link, a bind
// mounted namespace file or /proc/self/fd/N) and calls RunIn with it.
func RunInPath(path string, nstype int, fn func() error) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	return RunIn(fd, nstype, fn)
}

// RunIn runs fn (see Locked) on a fresh thread that has joined the
// namespace open at fd with setns(fd, nstype). nstype is e.g.
// unix.CLONE_NEWIPC; 0 accepts any type, but passing it makes the kernel
// check that fd is the namespace the caller meant. Before the thread ends
// it switches back to its own namespace (best effort): the runtime does not
// end a locked main thread but parks it for good, and a parked thread
// should not keep the namespace alive.
func RunIn(fd int, nstype int, fn func() error) error {
	return Locked(func() error {
		if kind := movableKind(nstype); kind != "" {
			if back, err := unix.Open("/proc/thread-self/ns/"+kind, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
				defer func() {
					linux.Setns(back, nstype)
					unix.Close(back)
				}()
			}
		}
		if err := linux.Setns(fd, nstype); err != nil {
			return fmt.Errorf("setns(%s): %w", TypeName(nstype), err)
		}
		return fn()
	})
}

// RunInRoot runs fn (see Locked) on a fresh thread that sees the file
// system as pid does: it joins pid's namespaces named in kinds ("net",
// "ipc", "cgroup", ...; entries of /proc/PID/ns), in that order, then its
// mount namespace, and chroots to pid's root, so that absolute paths in fn
// resolve as they do for pid. The thread cannot come back (it unshared its
// fs struct) and dies with fn.
func RunInRoot(pid int, kinds []string, fn func() error) error {
	fds, err := openRoot(pid, kinds)
	if err != nil {
		return err
	}
	defer fds.close()
	return Locked(func() error {
		if err := fds.enter(); err != nil {
			return fmt.Errorf("pid %d: %w", pid, err)
		}
		return fn()
	})
}

// rootFds are the open files a thread needs to enter a process's view:
// its root directory and its namespaces (the mount namespace last).
type rootFds struct {
	root  int
	kinds []string
	ns    []int
}

// openRoot opens /proc/PID/root and /proc/PID/ns/K for each of kinds and
// mnt, from the caller's thread (before any setns, so that /proc is ours).
func openRoot(pid int, kinds []string) (*rootFds, error) {
	base := "/proc/" + strconv.Itoa(pid) + "/"
	root, err := unix.Open(base+"root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root of pid %d: %w", pid, err)
	}
	r := &rootFds{root: root, kinds: append(append([]string{}, kinds...), "mnt")}
	for _, k := range r.kinds {
		fd, err := unix.Open(base+"ns/"+k, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			r.close()
			return nil, fmt.Errorf("open %s namespace of pid %d: %w", k, pid, err)
		}
		r.ns = append(r.ns, fd)
	}
	return r, nil
}

func (r *rootFds) close() {
	unix.Close(r.root)
	for _, fd := range r.ns {
		unix.Close(fd)
	}
}

// enter moves the calling (locked, fresh) thread into the namespaces and
// root. setns(CLONE_NEWNS) fails with EINVAL while the fs struct is shared
// with other threads (every Go thread shares it), hence unshare(CLONE_FS)
// first; setns leaves the thread at the namespace's root mount, and the
// process's root is where its pivot_root or chroot put it.
func (r *rootFds) enter() error {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare(CLONE_FS): %w", err)
	}
	for i, k := range r.kinds {
		if err := linux.Setns(r.ns[i], typeOf(k)); err != nil {
			return fmt.Errorf("setns into its %s namespace: %w", k, err)
		}
	}
	if err := unix.Fchdir(r.root); err != nil {
		return fmt.Errorf("fchdir to its root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot to its root: %w", err)
	}
	return unix.Chdir("/")
}

// nsTypes maps /proc/PID/ns names to CLONE_NEW* types.
var nsTypes = map[string]int{
	"ipc": unix.CLONE_NEWIPC, "uts": unix.CLONE_NEWUTS, "net": unix.CLONE_NEWNET,
	"mnt": unix.CLONE_NEWNS, "pid": unix.CLONE_NEWPID, "cgroup": unix.CLONE_NEWCGROUP,
	"user": unix.CLONE_NEWUSER, "time": unix.CLONE_NEWTIME,
}

// typeOf is the CLONE_NEW* type of a /proc/PID/ns name (0, any type, for
// an unknown name).
func typeOf(kind string) int { return nsTypes[kind] }

// TypeName is the /proc/PID/ns name of a CLONE_NEW* type ("any" for 0).
func TypeName(t int) string {
	if t == 0 {
		return "any"
	}
	for k, v := range nsTypes {
		if v == t {
			return k
		}
	}
	return fmt.Sprintf("%#x", t)
}

// movableKind is the /proc/PID/ns name of a CLONE_NEW* type whose setns
// works in a multithreaded process (so a thread can switch back), or "".
func movableKind(t int) string {
	switch t {
	case unix.CLONE_NEWIPC, unix.CLONE_NEWUTS, unix.CLONE_NEWNET:
		return TypeName(t)
	}
	return ""
}

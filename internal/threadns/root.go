package threadns

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
)

// Root runs functions on an OS thread of its own that sees the file system
// of another process: its mount namespace, with the process's root as its
// root and cwd, and its network namespace. Path names given to bind,
// connect and the like then resolve as they do in that process (a
// container's /run/app.sock is the container's, not ours).
//
// The thread stops sharing its fs (root, cwd, umask) with the rest of the
// process (unshare CLONE_FS: only then may it enter a mount namespace), so
// it can never serve another goroutine again: its goroutine stays locked
// to it and returns at Close, which ends the thread.
type Root struct {
	reqs  chan func()
	quit  chan struct{} // closed by Close
	done  chan struct{} // closed when the thread's goroutine returns
	close sync.Once
}

// EnterRoot starts the thread for pid (see Root). The caller must Close it.
func EnterRoot(pid int) (*Root, error) {
	fds, err := openRoot(pid, []string{"net"})
	if err != nil {
		return nil, fmt.Errorf("pid %d: enter its root: %w", pid, err)
	}
	r := &Root{reqs: make(chan func()), quit: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		defer close(r.done)
		// never unlocked: the goroutine's end ends the thread, whose fs
		// and namespaces are no longer the process's
		runtime.LockOSThread()
		err := fds.enter()
		fds.close()
		if err != nil {
			ready <- err
			return
		}
		ready <- nil
		for {
			select {
			case fn := <-r.reqs:
				fn()
			case <-r.quit:
				return
			}
		}
	}()
	if err := <-ready; err != nil {
		<-r.done
		return nil, fmt.Errorf("pid %d: enter its root: %w", pid, err)
	}
	return r, nil
}

// errClosed: Do after Close.
var errClosed = errors.New("threadns: root thread closed")

// Do runs fn on the thread and returns its error. Calls are serialized.
func (r *Root) Do(fn func() error) (err error) {
	if r == nil {
		return fn()
	}
	res := make(chan error, 1)
	select {
	case r.reqs <- func() { res <- fn() }:
	case <-r.done:
		return errClosed
	}
	return <-res
}

// Close ends the thread. A nil Root is a no-op.
func (r *Root) Close() {
	if r == nil {
		return
	}
	r.close.Do(func() { close(r.quit) })
	<-r.done
}

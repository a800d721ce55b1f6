// Package threadns moves the calling OS thread into another process's
// network namespace and back.
package threadns

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/linux"
)

// EnterNetns moves the calling thread (locked to its goroutine) into the
// network namespace of pid, so that sock_diag snapshots and the network
// lock concern the tree's namespace, and returns how to move back. When pid
// is in ours already, nothing changes.
func EnterNetns(pid int) (back func() error, err error) {
	nop := func() error { return nil }
	self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
	ours, err := os.Readlink(self)
	if err != nil {
		return nil, err
	}
	target := fmt.Sprintf("/proc/%d/ns/net", pid)
	theirs, err := os.Readlink(target)
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	if ours == theirs {
		return nop, nil
	}
	old, err := unix.Open(self, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	nfd, err := unix.Open(target, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(old)
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	defer unix.Close(nfd)
	if err := linux.Setns(nfd, unix.CLONE_NEWNET); err != nil {
		unix.Close(old)
		return nil, fmt.Errorf("pid %d: enter its network namespace %s: %w", pid, theirs, err)
	}
	return func() error {
		defer unix.Close(old)
		if err := linux.Setns(old, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("back to network namespace %s: %w", ours, err)
		}
		return nil
	}, nil
}

package dump

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/inetsk"
	"github.com/ctr-cr/ctr-cr/core/netlock"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// lockConnections finds the TCP connections the frozen tree holds and
// locks the network for exactly those (netlock) before their state is
// read, so that nothing the peer sends from now on is acknowledged by a
// socket whose queues are already in the image. It returns the inodes of
// the locked connections. The calling thread must be in the tree's
// network namespace (see enterNetns: sock_diag and the lock are per
// namespace); a tree whose sockets span several namespaces is refused.
func (d *dumper) lockConnections() (map[uint64]bool, error) {
	ours, err := os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, err
	}
	inos := map[uint64]bool{}
	for _, t := range d.tasks {
		if t.zombie {
			continue
		}
		theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", t.pid))
		if err != nil {
			return nil, fmt.Errorf("pid %d: %w", t.pid, err)
		}
		fds, err := procfs.Fds(t.pid)
		if err != nil {
			return nil, fmt.Errorf("pid %d: %w", t.pid, err)
		}
		sockets := 0
		for _, fd := range fds {
			link, err := procfs.FdLink(t.pid, fd)
			if err != nil {
				return nil, fmt.Errorf("pid %d: fd %d: %w", t.pid, fd, err)
			}
			if s, ok := strings.CutPrefix(link, "socket:["); ok {
				if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
					inos[ino] = true
					sockets++
				}
			}
		}
		if sockets > 0 && theirs != ours {
			return nil, fmt.Errorf("pid %d holds sockets in network namespace %s, the tree's root is in %s: a tree across network namespaces is not supported with --tcp-established", t.pid, theirs, ours)
		}
	}
	conns, err := inetsk.Connections(inos)
	if err != nil {
		return nil, err
	}
	locked := map[uint64]bool{}
	if len(conns) == 0 {
		return locked, nil
	}
	var nc []netlock.Conn
	for _, e := range conns {
		l, r := e.Conn()
		nc = append(nc, netlock.Conn{Local: l, Remote: r})
		locked[e.Ino] = true
	}
	name := netlock.NewName()
	if err := netlock.Lock(name, nc); err != nil {
		return nil, err
	}
	d.netLock = name
	return locked, nil
}

// enterNetns moves the calling thread (locked to its goroutine) into the
// network namespace of pid, so that sock_diag snapshots and the network
// lock concern the tree's namespace, and returns how to move back. When pid
// is in ours already, nothing changes.
func enterNetns(pid int) (back func() error, err error) {
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
	if err := unix.Setns(nfd, unix.CLONE_NEWNET); err != nil {
		unix.Close(old)
		return nil, fmt.Errorf("pid %d: enter its network namespace %s: %w", pid, theirs, err)
	}
	return func() error {
		defer unix.Close(old)
		if err := unix.Setns(old, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("back to network namespace %s: %w", ours, err)
		}
		return nil
	}, nil
}

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

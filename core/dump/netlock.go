package dump

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/inetsk"
	"github.com/ctr-cr/ctr-cr/core/netlock"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/internal/oprec"
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
	var held []heldSocket // for the operation record
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
					held = append(held, heldSocket{t.pid, fd, ino})
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
	if err := d.recordLock(name, locked, held); err != nil {
		return nil, err
	}
	if err := netlock.Lock(name, nc); err != nil {
		return nil, err
	}
	d.netLock = name
	return locked, nil
}

// heldSocket is fd of pid, a socket of inode ino.
type heldSocket struct {
	pid, fd int
	ino     uint64
}

// recordLock writes down, before the lock table name is installed and the
// connections put in repair mode, what a crash of ctr-cr would leave: the
// table (in the calling thread's network namespace) and every fd of the
// tree holding a locked connection (see internal/oprec).
func (d *dumper) recordLock(name string, locked map[uint64]bool, held []heldSocket) error {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), &st); err != nil {
		return err
	}
	target, err := oprec.ProcOf(d.root)
	if err != nil {
		return err
	}
	var repairs []oprec.Repair
	procs := map[int]oprec.Proc{}
	for _, h := range held {
		if !locked[h.ino] {
			continue
		}
		p, ok := procs[h.pid]
		if !ok {
			if p, err = oprec.ProcOf(h.pid); err != nil {
				return err
			}
			procs[h.pid] = p
		}
		repairs = append(repairs, oprec.Repair{Target: p, Fd: h.fd, Ino: h.ino})
	}
	img, err := filepath.Abs(d.w.Dir())
	if err != nil {
		return err
	}
	return oprec.AddNetLock(oprec.NetLock{Table: name, Netns: st.Ino, Target: target, Image: img}, repairs)
}

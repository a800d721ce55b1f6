package restore

import (
	"fmt"
	"net/netip"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/netlock"
	"github.com/ctr-cr/ctr-cr/internal/threadns"
)

// relock re-creates the dump's network lock (when the image has TCP
// connections) in the network namespace of pid, a new one whose links the
// caller is about to bring up (Options.Relock). The lock the dump took
// lived in the old namespace, gone with the old tree; without a new one the
// peers' retransmissions would meet the new links before the sockets exist
// and be answered with RST. The restore removes it once the connections
// are back, or when it fails. It reports whether it locked. The calling
// goroutine must be locked to its OS thread.
func relock(img *image.Reader, pid int) (bool, error) {
	inv := img.Inventory()
	if inv.NetLock == "" {
		return false, nil
	}
	fl, err := img.Files()
	if err != nil {
		return false, fmt.Errorf("validate: %w", err)
	}
	var conns []netlock.Conn
	for _, f := range fl {
		s := f.Inet
		if f.Kind != imagepb.FileKind_FILE_INET || s == nil || s.Tcp == nil {
			continue
		}
		l, lok := netip.AddrFromSlice(s.SrcAddr)
		r, rok := netip.AddrFromSlice(s.DstAddr)
		if !lok || !rok || s.SrcPort > 65535 || s.DstPort > 65535 {
			return false, fmt.Errorf("validate: inet socket:[%d]: bad addresses", s.Ino)
		}
		conns = append(conns, netlock.Conn{Local: netip.AddrPortFrom(l, uint16(s.SrcPort)), Remote: netip.AddrPortFrom(r, uint16(s.DstPort))})
	}
	if len(conns) == 0 {
		return false, nil
	}
	return true, inNetns(pid, func() error { return netlock.Lock(inv.NetLock, conns) })
}

// unlockIn removes the network lock name from the network namespace of
// pid (a restore that failed after relock, before it entered that
// namespace).
func unlockIn(pid int, name string) error {
	return inNetns(pid, func() error { return netlock.Unlock(name) })
}

// inNetns runs fn on the calling thread in the network namespace of pid,
// and goes back.
func inNetns(pid int, fn func() error) error {
	back, err := threadns.EnterNetns(pid)
	if err != nil {
		return err
	}
	ferr := fn()
	if err := back(); err != nil && ferr == nil {
		ferr = err
	}
	return ferr
}

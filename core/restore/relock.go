package restore

import (
	"fmt"
	"net/netip"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/netlock"
	"github.com/ctr-cr/ctr-cr/internal/threadns"
)

// Relock re-creates the dump's network lock (when the image has TCP
// connections) in the network namespace of pid: a container's new sandbox,
// whose links the caller is about to bring up. The lock the dump took lived
// in the old namespace, gone with the old container; without a new one the
// peers' retransmissions would meet the new links before the sockets exist
// and be answered with RST. Restore (Options.Adopt = pid) removes it once
// the connections are back, or when it fails. The calling goroutine must be
// locked to its OS thread.
func Relock(dir string, pid int) error {
	img, err := Open(dir)
	if err != nil {
		return err
	}
	return RelockImage(img, pid)
}

// RelockImage is Relock of an image opened by Open (a container restore
// opens and validates its image once, then hands it to RelockImage and
// RestoreImage).
func RelockImage(img *image.Reader, pid int) error {
	inv := img.Inventory()
	if inv.NetLock == "" {
		return nil
	}
	fl, err := img.Files()
	if err != nil {
		return fmt.Errorf("validate: %w", err)
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
			return fmt.Errorf("validate: inet socket:[%d]: bad addresses", s.Ino)
		}
		conns = append(conns, netlock.Conn{Local: netip.AddrPortFrom(l, uint16(s.SrcPort)), Remote: netip.AddrPortFrom(r, uint16(s.DstPort))})
	}
	if len(conns) == 0 {
		return nil
	}
	back, err := threadns.EnterNetns(pid)
	if err != nil {
		return err
	}
	lerr := netlock.Lock(inv.NetLock, conns)
	if err := back(); err != nil && lerr == nil {
		lerr = err
	}
	return lerr
}

package files

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/netlinksk"
	"github.com/ctr-cr/ctr-cr/core/packetsk"
)

// Netlink and packet sockets (FILE_NETLINK, FILE_PACKET): recorded with
// core/netlinksk and core/packetsk.
func init() {
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_NETLINK, sockFamilies: []int{unix.AF_NETLINK},
		dump: (*Table).netlinkSocket,
		open: func(_ *Opener, f *imagepb.FileEntry) (int, error) {
			fd, err := netlinksk.Create(f.Netlink)
			return openLowSocket(f, fd, err)
		},
		describe: func(f *imagepb.FileEntry) string {
			if f.Netlink == nil {
				return ""
			}
			return " " + netlinksk.Describe(f.Netlink)
		}})
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_PACKET, sockFamilies: []int{unix.AF_PACKET},
		dump: (*Table).packetSocket,
		open: func(_ *Opener, f *imagepb.FileEntry) (int, error) {
			fd, err := packetsk.Create(f.Packet)
			return openLowSocket(f, fd, err)
		},
		describe: func(f *imagepb.FileEntry) string {
			if f.Packet == nil {
				return ""
			}
			return " " + packetsk.Describe(f.Packet)
		}})
}

// netlinkSocket records a netlink socket (see core/netlinksk for what is
// kept; the rest is refused naming the fd).
func (t *Table) netlinkSocket(f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
	fd, cp, link := d.fd, d.cp, d.link
	sk, err := netlinksk.Dump(cp, f.Ino)
	if err != nil {
		var ue *netlinksk.UnsupportedError
		if errors.As(err, &ue) {
			return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "netlink socket: " + ue.Reason}
		}
		return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
	}
	f.Kind = imagepb.FileKind_FILE_NETLINK
	f.Netlink = sk
	return t.add("", f), nil
}

// packetSocket records a packet socket (see core/packetsk).
func (t *Table) packetSocket(f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
	fd, cp, link := d.fd, d.cp, d.link
	sk, err := packetsk.Dump(cp, f.Ino)
	if err != nil {
		var ue *packetsk.UnsupportedError
		if errors.As(err, &ue) {
			return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "packet socket: " + ue.Reason}
		}
		return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
	}
	f.Kind = imagepb.FileKind_FILE_PACKET
	f.Packet = sk
	return t.add("", f), nil
}

// openLowSocket gives a netlink or packet socket just rebuilt (fd, err of
// its Create) its O_NONBLOCK setting.
func openLowSocket(f *imagepb.FileEntry, fd int, err error) (int, error) {
	if err != nil {
		return -1, err
	}
	if err := unix.SetNonblock(fd, f.Flags&unix.O_NONBLOCK != 0); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

package files

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/inetsk"
)

// inetSocket records an IPv4/IPv6 socket (see core/inetsk for what is
// supported; the rest is refused naming the fd).
func (t *Table) inetSocket(f *imagepb.FileEntry, fd, cp int, link string) (uint32, error) {
	if t.inet == nil {
		t.inet = inetsk.NewDiag()
	}
	sk, err := inetsk.Dump(cp, f.Ino, t.inet)
	if err != nil {
		var ue *inetsk.UnsupportedError
		if errors.As(err, &ue) {
			return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "inet socket: " + ue.Reason}
		}
		return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
	}
	f.Kind = imagepb.FileKind_FILE_INET
	f.Inet = sk
	return t.add("", f), nil
}

// openInet rebuilds an inet socket with its O_NONBLOCK setting.
func openInet(f *imagepb.FileEntry) (int, error) {
	fd, err := inetsk.Create(f.Inet)
	if err != nil {
		return -1, err
	}
	if err := unix.SetNonblock(fd, f.Flags&unix.O_NONBLOCK != 0); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

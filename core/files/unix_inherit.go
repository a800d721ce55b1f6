package files

import (
	"errors"
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Inherited unix sockets: a unix socket of the dump whose peer was outside
// it (dumped with --ext-unix-sk, marked External) can be replaced at
// restore by a socket the caller hands in, as with CRIU:
// --inherit-fd fd[N]:socket:[INO], INO the dumped socket's inode ("ctr-cr
// show" lists them). The caller's socket is used as it is: its peer,
// queues and options are the caller's. An external socket whose peer had
// no name (the other end of a socketpair, an unnamed client) can only be
// restored that way; one whose peer had a name connects to it again
// unless a socket is handed in.

// InheritSocketKey is the --inherit-fd key of an external unix socket.
func InheritSocketKey(ino uint64) string { return fmt.Sprintf("socket:[%d]", ino) }

// inheritedSocket returns the caller's fd for unix socket u, if one was
// handed in.
func (o *Opener) inheritedSocket(u *imagepb.UnixSocket) (int, bool) {
	fd, ok := o.inherit[InheritSocketKey(u.Ino)]
	return fd, ok
}

// checkExternalSockets verifies, before anything is restored, that every
// socket key of --inherit-fd names an external unix socket of the image
// and hands in a unix socket of its type, and that every external socket
// whose peer had no name has one.
func (o *Opener) checkExternalSockets() error {
	external := map[uint64]*imagepb.UnixSocket{}
	for _, f := range o.files {
		if f.Kind == imagepb.FileKind_FILE_UNIX && f.Unix != nil && f.Unix.External {
			external[f.Unix.Ino] = f.Unix
		}
	}
	var errs []error
	for key, fd := range o.inherit {
		var ino uint64
		if _, err := fmt.Sscanf(key, "socket:[%d]", &ino); err != nil || InheritSocketKey(ino) != key {
			continue // another kind of key
		}
		u := external[ino]
		if u == nil {
			errs = append(errs, fmt.Errorf("--inherit-fd fd[%d]:%s: the image has no unix socket %s whose peer was outside the dump", fd, key, key))
			continue
		}
		if err := checkInheritedSocket(fd, u); err != nil {
			errs = append(errs, fmt.Errorf("--inherit-fd fd[%d]:%s: %w", fd, key, err))
		}
	}
	var missing []uint64
	for ino, u := range external {
		if _, ok := o.inheritedSocket(u); !ok && u.PeerName == "" {
			missing = append(missing, ino)
		}
	}
	sort.Slice(missing, func(i, j int) bool { return missing[i] < missing[j] })
	for _, ino := range missing {
		errs = append(errs, fmt.Errorf("unix socket:[%d] was connected to a peer outside the dump that had no name: restore it with --inherit-fd fd[N]:%s (N: an fd of ctr-cr that is the unix socket to use)", ino, InheritSocketKey(ino)))
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// checkInheritedSocket checks that fd is a unix socket of u's type.
func checkInheritedSocket(fd int, u *imagepb.UnixSocket) error {
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("fd %d is not a socket: %w", fd, err)
	}
	if dom != unix.AF_UNIX {
		return fmt.Errorf("fd %d is a socket of family %d, not a unix socket", fd, dom)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("fd %d: SO_TYPE: %w", fd, err)
	}
	if int32(typ) != u.Type {
		return fmt.Errorf("fd %d is a unix %s socket, the dumped one was %s", fd, typeName(int32(typ)), typeName(u.Type))
	}
	return nil
}

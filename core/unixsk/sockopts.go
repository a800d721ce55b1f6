package unixsk

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/internal/sockcheck"
)

// carriedOpts are the socket-level options the image carries (or checks
// elsewhere): the others must read as on a fresh socket.
var carriedOpts = map[string]bool{"SO_PASSCRED": true, "SO_PASSSEC": true, "SO_PASSPIDFD": true, "SO_PASSRIGHTS": true, "SO_PEEK_OFF": true}

// checkGenericOptions refuses a unix socket fd of type typ with a
// socket-level option the image does not carry set away from what a
// fresh socket of its type reads (internal/sockcheck), naming it.
func checkGenericOptions(fd, typ int, s *imagepb.UnixSocket) error {
	ref, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("unix socket:[%d]: reference socket: %w", s.Ino, err)
	}
	defer unix.Close(ref)
	if what := sockcheck.NonDefault(fd, ref, carriedOpts); what != "" {
		return unsupported(s.Ino, "%s is not kept by the image", what)
	}
	return nil
}

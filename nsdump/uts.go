package nsdump

import (
	"bytes"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/threadns"
)

// maxUTSName is __NEW_UTS_LEN: the longest hostname or domainname.
const maxUTSName = 64

// UTS is the state of a UTS namespace.
type UTS struct {
	Hostname   string `json:"hostname"`
	Domainname string `json:"domainname"`
}

// Validate rejects names the kernel would refuse (longer than 64 bytes or
// holding a NUL byte).
func (u *UTS) Validate() error {
	if u == nil {
		return errors.New("uts: missing")
	}
	for _, f := range []struct{ what, v string }{{"hostname", u.Hostname}, {"domainname", u.Domainname}} {
		if len(f.v) > maxUTSName {
			return fmt.Errorf("uts: %s %q: longer than %d bytes", f.what, truncate(f.v), maxUTSName)
		}
		if bytes.IndexByte([]byte(f.v), 0) >= 0 {
			return fmt.Errorf("uts: %s %q: holds a NUL byte", f.what, truncate(f.v))
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// DumpUTS returns the hostname and domainname of the UTS namespace of pid.
func DumpUTS(pid int) (*UTS, error) {
	u, err := dumpUTS(NSPath(pid, "uts"))
	if err != nil {
		return nil, fmt.Errorf("dump uts: pid %d: %w", pid, err)
	}
	return u, nil
}

// DumpUTSNS returns the hostname and domainname of the UTS namespace file
// at path.
func DumpUTSNS(path string) (*UTS, error) {
	u, err := dumpUTS(path)
	if err != nil {
		return nil, fmt.Errorf("dump uts: %s: %w", path, err)
	}
	return u, nil
}

func dumpUTS(path string) (*UTS, error) {
	var u UTS
	err := threadns.RunInPath(path, unix.CLONE_NEWUTS, func() error {
		var un unix.Utsname
		if err := unix.Uname(&un); err != nil {
			return fmt.Errorf("uname: %w", err)
		}
		u.Hostname = cstr(un.Nodename[:])
		u.Domainname = cstr(un.Domainname[:])
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &u, nil
}

// RestoreUTS validates u and sets the hostname and domainname of the UTS
// namespace file at path (typically a fresh namespace of the container
// being restored).
func RestoreUTS(path string, u *UTS) error {
	if err := u.Validate(); err != nil {
		return fmt.Errorf("restore uts: %w", err)
	}
	err := threadns.RunInPath(path, unix.CLONE_NEWUTS, func() error {
		if err := unix.Sethostname([]byte(u.Hostname)); err != nil {
			return fmt.Errorf("hostname %q: %w", u.Hostname, err)
		}
		if err := unix.Setdomainname([]byte(u.Domainname)); err != nil {
			return fmt.Errorf("domainname %q: %w", u.Domainname, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("restore uts: %s: %w", path, err)
	}
	return nil
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

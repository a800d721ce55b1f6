package files

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/inetsk"
)

// IPv4/IPv6 sockets (FILE_INET): recorded by inetSocket with core/inetsk.
func init() {
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_INET, sockFamilies: []int{unix.AF_INET, unix.AF_INET6},
		dump: (*Table).inetSocket,
		open: openAlone(openInet), describe: describeInet})
}

// describeInet names an inet socket, and a listener's backlog.
func describeInet(f *imagepb.FileEntry) string {
	if f.Inet == nil {
		return ""
	}
	s := " " + inetsk.Describe(f.Inet)
	if f.Inet.State == inetsk.TCPListen {
		s += fmt.Sprintf(" backlog %d", f.Inet.Backlog)
	}
	return s
}

// inetSocket records an IPv4/IPv6 socket (see core/inetsk for what is
// supported; the rest is refused naming the fd).
func (t *Table) inetSocket(f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
	fd, cp, link, opts := d.fd, d.cp, d.link, d.opts
	if t.inet == nil {
		t.inet = inetsk.NewDiag()
	}
	sk, err := inetsk.DumpWith(cp, f.Ino, t.inet, inetsk.DumpOptions{Conn: opts.TCPLocked[f.Ino], SkipInFlight: opts.SkipInFlight, CloseConn: opts.TCPClose})
	if err != nil {
		var ue *inetsk.UnsupportedError
		if errors.As(err, &ue) {
			return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "inet socket: " + ue.Reason}
		}
		return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
	}
	if sk.Tcp != nil {
		// Out of repair mode at once: a dumper that dies must not leave
		// the connection frozen (the network lock keeps it still).
		// RepairForKill puts it back before the task is killed.
		if err := inetsk.EndRepair(cp, sk); err != nil {
			return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
		}
		t.repairs = append(t.repairs, repairing{cp, sk})
	}
	f.Kind = imagepb.FileKind_FILE_INET
	f.Inet = sk
	return t.add("", f), nil
}

// CloseConnections makes every TCP connection of the image come back as
// a closed socket (restore --tcp-close; see inetsk.CloseConnection). Call
// it before anything is opened.
func (o *Opener) CloseConnections() {
	for _, f := range o.files {
		if f.Kind == imagepb.FileKind_FILE_INET {
			inetsk.CloseConnection(f.Inet)
		}
	}
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

// OpenListeners opens every TCP listener of the image before anything
// else: a restored connection binds its port in repair mode (which
// ignores conflicts), but a listener bound after it would conflict with
// it (accepted connections share their listener's port). Packet sockets
// come first too: their memberships may change an interface's flags,
// which a restored rtnetlink socket must not find queued.
func (o *Opener) OpenListeners() error {
	for id, f := range o.files {
		if f.Kind == imagepb.FileKind_FILE_PACKET {
			if _, err := o.Open(id); err != nil {
				return err
			}
		}
	}
	for id, f := range o.files {
		if f.Kind == imagepb.FileKind_FILE_INET && f.Inet != nil && f.Inet.State == inetsk.TCPListen {
			if _, err := o.Open(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// ResumeConnections takes every restored TCP connection out of repair
// mode (the tasks hold them by now; the opener's copy is the same
// socket). Call it before the network lock is removed and before the
// tasks run.
func (o *Opener) ResumeConnections() error {
	for id, fd := range o.open {
		f := o.files[id]
		if f != nil && f.Kind == imagepb.FileKind_FILE_INET && f.Inet != nil && f.Inet.Tcp != nil {
			if err := inetsk.Resume(fd, f.Inet); err != nil {
				return err
			}
		}
	}
	return nil
}

// HasConnections reports whether the image holds TCP connections.
func (o *Opener) HasConnections() bool {
	for _, f := range o.files {
		if f.Kind == imagepb.FileKind_FILE_INET && f.Inet != nil && f.Inet.Tcp != nil {
			return true
		}
	}
	return false
}

package files

import (
	"errors"
	"fmt"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/core/unixsk"
)

// Unix sockets (FILE_UNIX): recorded by unixSocket with core/unixsk (their
// peers checked by CheckSockets once every process is recorded), built all
// at once on the first open (socketEnd).
func init() {
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_UNIX, sockFamilies: []int{unix.AF_UNIX},
		dump: (*Table).unixSocket, open: (*Opener).socketEnd, describe: describeUnix})
}

// describeUnix names a unix socket, and for one whose peer is outside the
// image how the restore gives it back.
func describeUnix(f *imagepb.FileEntry) string {
	s := " " + unixsk.Describe(f.Unix)
	if f.Unix != nil && f.Unix.External {
		s += fmt.Sprintf("; peer outside: restore with --inherit-fd fd[N]:socket:[%d]", f.Unix.Ino)
		if f.Unix.PeerName != "" {
			s += fmt.Sprintf(" or let it connect to %q again", f.Unix.PeerName)
		}
	}
	return s
}

// unixSocket records a unix socket (core/unixsk: every type, bound,
// listening, connected, with their queues and the files in flight).
func (t *Table) unixSocket(f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
	pid, fd, cp, link := d.pid, d.fd, d.cp, d.link
	if pid == os.Getpid() {
		// a unix socket in flight in another one's queue
		return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "unix socket in flight (sent with SCM_RIGHTS, not received yet)"}
	}
	if t.diag == nil {
		diag, err := unixsk.ReadDiag()
		if err != nil {
			return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
		}
		t.diag = diag
	}
	sk, err := unixsk.DumpWith(cp, f.Ino, t.diag, unixsk.Options{InFlight: t.inFlight, Root: fmt.Sprintf("/proc/%d/root", pid), Cwd: fmt.Sprintf("/proc/%d/cwd", pid)})
	if err != nil {
		var ue *unixsk.UnsupportedError
		if errors.As(err, &ue) {
			return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "unix socket: " + ue.Reason}
		}
		return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
	}
	f.Kind = imagepb.FileKind_FILE_UNIX
	f.Unix = sk
	t.unixAt[f.Ino] = fdRef{pid: pid, fd: fd, cp: cp}
	return t.add("", f), nil
}

// inFlight records the files sent with one queued SCM_RIGHTS message, from
// the copies the kernel installed in our process while peeking (they are
// ours: held until Close). A file also open in a dumped process (or in
// flight elsewhere) is the same entry, found with kcmp.
func (t *Table) inFlight(fds []int) ([]uint32, error) {
	self := os.Getpid()
	t.held = append(t.held, fds...)
	ids := make([]uint32, len(fds))
	for i, fd := range fds {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, fmt.Errorf("file in flight: fstat: %w", err)
		}
		key := [2]uint64{st.Dev, st.Ino}
		for _, s := range t.seen[key] {
			if r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(self), uintptr(s.pid), 0 /*KCMP_FILE*/, uintptr(fd), uintptr(s.fd), 0); e == 0 && r == 0 {
				ids[i] = s.id
				break
			}
		}
		if ids[i] != 0 {
			continue
		}
		t.noteInFlight(st.Ino)
		link, err := procfs.FdLink(self, fd)
		if err != nil {
			return nil, fmt.Errorf("file in flight: %w", err)
		}
		fi, err := procfs.ReadFdInfo(self, fd)
		if err != nil {
			return nil, fmt.Errorf("file in flight (%s): %w", link, err)
		}
		id, err := t.recordFile(self, fd, fd, link, fi, &st, t.opts)
		if err != nil {
			return nil, fmt.Errorf("file in flight: %w", err)
		}
		t.seen[key] = append(t.seen[key], seenFd{pid: self, fd: fd, id: id})
		ids[i] = id
	}
	for _, id := range ids {
		// (a socket also held by a task was found by kcmp above)
		if f := t.byID(id); f != nil && f.Kind == imagepb.FileKind_FILE_UNIX {
			return nil, &UnsupportedError{Fd: -1, Link: fmt.Sprintf("socket:[%d]", f.Ino), Kind: "unix socket in flight (sent with SCM_RIGHTS, not received yet)"}
		}
	}
	return ids, nil
}

// byID returns the entry with that id.
func (t *Table) byID(id uint32) *imagepb.FileEntry {
	for _, f := range t.Files {
		if f.Id == id {
			return f
		}
	}
	return nil
}

// unixEntries lists the unix socket entries, by inode.
func (t *Table) unixEntries() map[uint64]*imagepb.FileEntry {
	m := map[uint64]*imagepb.FileEntry{}
	for _, f := range t.Files {
		if f.Kind == imagepb.FileKind_FILE_UNIX && f.Unix != nil {
			m[f.Unix.Ino] = f
		}
	}
	return m
}

// unixErr names the socket of entry f: where it is open, and its inode.
func (t *Table) unixErr(f *imagepb.FileEntry, format string, a ...any) error {
	at := t.unixAt[f.Unix.Ino]
	return &UnsupportedError{Pid: at.pid, Fd: at.fd, Link: fmt.Sprintf("socket:[%d]", f.Unix.Ino), Kind: fmt.Sprintf(format, a...)}
}

// CheckSockets verifies, once every process is recorded, that the peer of
// every unix socket is in the dump. A socket connected to a peer outside
// (or waiting in the accept queue of an outside listener) is refused,
// naming it, its peer and the peer's name, unless opts.ExtUnixSk: it is
// then marked External and connects to the peer's name again on restore
// (refused all the same when the peer has no name, or when data from the
// outside peer is queued on it, or data it sent into an unaccepted
// connection is, which could not be restored). A client outside the dump
// waiting in the accept queue of a listener in the dump is refused too
// unless opts.ExtUnixSk: its connection is then dropped on restore.
// Unaccepted connections carrying data are refused with
// opts.LeaveRunning: reading them would take them from the target.
func (t *Table) CheckSockets(opts Options) error {
	socks := t.unixEntries()
	inos := make([]uint64, 0, len(socks))
	for ino := range socks {
		inos = append(inos, ino)
	}
	sort.Slice(inos, func(i, j int) bool { return inos[i] < inos[j] })
	for _, ino := range inos {
		f := socks[ino]
		u := f.Unix
		if u.State == 10 { // listening
			if err := t.checkListener(f, socks, opts); err != nil {
				return err
			}
			continue
		}
		peer := u.PeerIno
		if peer == 0 {
			peer = u.ListenerIno
		}
		if peer == 0 || socks[peer] != nil {
			continue
		}
		what := fmt.Sprintf("unix %s socket connected to socket:[%d] (%s) outside the dump", typeName(u.Type), peer, nameOrUnbound(u.PeerName))
		if u.PeerIno == 0 {
			what = fmt.Sprintf("unix %s socket waiting in the accept queue of socket:[%d] (%s) outside the dump", typeName(u.Type), peer, nameOrUnbound(u.PeerName))
		}
		if !opts.ExtUnixSk {
			if u.PeerName == "" {
				return t.unixErr(f, "%s: dump with --ext-unix-sk and restore with --inherit-fd fd[N]:%s to hand in the socket to use", what, InheritSocketKey(u.Ino))
			}
			return t.unixErr(f, "%s: dump with --ext-unix-sk to connect it to %q again on restore", what, u.PeerName)
		}
		if u.PeerName == "" && u.PeerIno == 0 {
			return t.unixErr(f, "%s: the listener has no name to connect to again", what)
		}
		// a peer without a name: restore hands a socket in with
		// --inherit-fd fd[N]:socket:[INO] (unix_inherit.go)
		if u.PeerName != "" && u.PeerName[0] != '/' && u.PeerName[0] != '@' {
			return t.unixErr(f, "%s: the peer's name is a relative path, which restore cannot resolve outside the dump", what)
		}
		if u.Type != unix.SOCK_DGRAM && len(u.Queue) > 0 {
			return t.unixErr(f, "%s: %d bytes it sent are queued and would be lost", what, len(u.Queue))
		}
		if e, ok := t.diag.Lookup(u.Ino); ok && u.PeerIno == 0 && e.WQueue > 0 {
			return t.unixErr(f, "%s: the data it sent into the unaccepted connection would be lost", what)
		}
		u.External = true
	}
	return nil
}

// checkListener checks the accept queue of a listening socket.
func (t *Table) checkListener(f *imagepb.FileEntry, socks map[uint64]*imagepb.FileEntry, opts Options) error {
	u := f.Unix
	for _, c := range u.Icons {
		if c != 0 && socks[c] == nil && !opts.ExtUnixSk { // (0: a client closed since, see CaptureUnixEmbryos)
			return t.unixErr(f, "unix listener %s has a connection from socket:[%d], outside the dump, waiting in its accept queue (dump with --ext-unix-sk to drop it on restore)", u.Name, c)
		}
	}
	if n := len(unixsk.EmbryosWithData(u, t.diag)); n > 0 && opts.LeaveRunning {
		return t.unixErr(f, "unix listener %s has %d unaccepted connection(s) with data queued or whose client is gone: reading them means accepting them, which cannot be undone, so it is refused with --leave-running", u.Name, n)
	}
	return nil
}

// CaptureUnixEmbryos reads the data waiting clients sent into unaccepted
// connections (see unixsk.CaptureEmbryos): it takes those connections from
// the target, so call it last, just before the image is written, and only
// when the target is killed afterwards. Files in flight there are recorded
// like the others; memfds among them are refused (their contents would be
// dumped with the memory, which is done by then).
// HasUnixEmbryos reports whether CaptureUnixEmbryos has anything to take:
// a listening unix socket of the dump with connections not yet accepted.
func (t *Table) HasUnixEmbryos() bool {
	for _, f := range t.Files {
		if l := f.Unix; f.Kind == imagepb.FileKind_FILE_UNIX && l != nil && l.State == 10 && len(l.Icons) > 0 {
			return true
		}
	}
	return false
}

func (t *Table) CaptureUnixEmbryos() error {
	socks := t.unixEntries()
	for _, f := range t.Files {
		l := f.Unix
		if f.Kind != imagepb.FileKind_FILE_UNIX || l == nil || l.State != 10 || len(l.Icons) == 0 {
			continue
		}
		clients := map[uint64]*imagepb.UnixSocket{}
		for _, c := range l.Icons {
			if e := socks[c]; e != nil && e.Unix.ListenerIno == l.Ino {
				clients[c] = e.Unix
			}
		}
		objs := len(t.Objects)
		acc, err := unixsk.CaptureEmbryos(t.unixAt[l.Ino].cp, l, clients, unixsk.Options{InFlight: t.inFlight})
		t.held = append(t.held, acc...)
		if err != nil {
			at := t.unixAt[l.Ino]
			return fmt.Errorf("pid %d: fd %d (socket:[%d]): %w", at.pid, at.fd, l.Ino, err)
		}
		if len(t.Objects) != objs {
			return t.unixErr(f, "memfd in flight in an unaccepted connection")
		}
	}
	return nil
}

func typeName(typ int32) string {
	switch typ {
	case unix.SOCK_STREAM:
		return "stream"
	case unix.SOCK_DGRAM:
		return "dgram"
	case unix.SOCK_SEQPACKET:
		return "seqpacket"
	}
	return fmt.Sprintf("type-%d", typ)
}

func nameOrUnbound(n string) string {
	if n == "" {
		return "unbound"
	}
	return fmt.Sprintf("%q", n)
}

// socketEnd returns our fd of a unix socket entry. On the first use of any,
// every unix socket of the image is built at once (unixsk.Build): they
// refer to each other by name, peer and accept queue. The files in flight
// are opened through the Opener, so a file also held by a process is the
// same open file description. With a root (SetRoot), the sockets' path
// names are bound, connected and unlinked in that process's mount
// namespace and root, from a thread of its own (threadns.Root).
func (o *Opener) socketEnd(f *imagepb.FileEntry) (int, error) {
	if f.Unix == nil {
		return -1, errors.New("unix socket entry without its description")
	}
	if o.unixBuilding {
		return -1, fmt.Errorf("unix socket:[%d] in flight in another unix socket: unsupported", f.Unix.Ino)
	}
	if o.unixBuilt {
		return -1, fmt.Errorf("unix socket:[%d]: not built", f.Unix.Ino)
	}
	var entries []*imagepb.FileEntry
	var socks []*imagepb.UnixSocket
	for _, e := range o.files {
		if e.Kind == imagepb.FileKind_FILE_UNIX {
			if e.Unix == nil {
				return -1, fmt.Errorf("file %d: unix socket entry without its description", e.Id)
			}
			entries = append(entries, e)
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Id < entries[j].Id })
	inherited := map[uint64]int{} // ino -> our duplicate of the caller's socket
	defer func() {
		if !o.unixBuilt {
			for _, fd := range inherited {
				unix.Close(fd)
			}
		}
	}()
	for _, e := range entries {
		if n, ok := o.inheritedSocket(e.Unix); ok && e.Unix.External {
			if _, done := inherited[e.Unix.Ino]; !done {
				dup, err := unix.FcntlInt(uintptr(n), unix.F_DUPFD_CLOEXEC, 0)
				if err != nil {
					return -1, fmt.Errorf("--inherit-fd fd[%d]:%s: %w", n, InheritSocketKey(e.Unix.Ino), err)
				}
				inherited[e.Unix.Ino] = dup
			}
			continue // the caller's socket replaces it (unix_inherit.go)
		}
		socks = append(socks, e.Unix)
	}
	in, done, err := o.inRoot()
	if err != nil {
		return -1, fmt.Errorf("unix sockets: %w", err)
	}
	o.unixBuilding = true
	fds, err := unixsk.BuildIn(socks, func(id uint32) (int, error) {
		if e := o.files[id]; e != nil && e.Kind == imagepb.FileKind_FILE_UNIX {
			return -1, fmt.Errorf("unix socket:[%d] in flight in another unix socket: unsupported", e.Ino)
		}
		return o.Open(id)
	}, in)
	o.unixBuilding = false
	done()
	if err != nil {
		return -1, err
	}
	o.unixBuilt = true
	for ino, fd := range inherited {
		fds[ino] = fd
	}
	for _, e := range entries {
		fd := fds[e.Unix.Ino]
		o.open[e.Id] = fd
		if err := unix.SetNonblock(fd, e.Flags&unix.O_NONBLOCK != 0); err != nil {
			return -1, fmt.Errorf("unix socket:[%d]: set O_NONBLOCK: %w", e.Unix.Ino, err)
		}
	}
	return o.open[f.Id], nil
}

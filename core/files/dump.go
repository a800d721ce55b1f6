// Package files dumps and restores a task's file descriptors: what each fd
// refers to (regular files, directories, ghost files that were deleted while
// open, character devices, memfds, pipes, eventfds, epoll sets, timerfds,
// signalfds, inotify instances, pseudo-terminals), with open flags, offsets and
// close-on-exec, deduplicated by open file description so that dup'd fds
// keep sharing one offset after restore.
//
// Each file kind of the image (imagepb.FileKind) is one driver entry
// (kinds.go): how the dump records it, how an image entry of it is checked,
// how the restore reopens it and how `ctr-cr show` describes it, registered
// from the file that holds the kind's code. To add a kind: its enum value
// in image.proto, and one file that registers its driver (TestKindDrivers
// fails for a kind without one).
package files

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/inetsk"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/core/unixsk"
)

// UnsupportedError is returned for an fd the engine cannot dump yet; the
// message names the fd and its kind.
type UnsupportedError struct {
	Pid  int // set when the error is found across processes
	Fd   int
	Link string
	Kind string
}

func (e *UnsupportedError) Error() string {
	if e.Pid != 0 {
		return fmt.Sprintf("pid %d: fd %d (%s): unsupported file kind %s", e.Pid, e.Fd, e.Link, e.Kind)
	}
	return fmt.Sprintf("fd %d (%s): unsupported file kind %s", e.Fd, e.Link, e.Kind)
}

// Options tune the file dump.
type Options struct {
	GhostLimit int64 // largest deleted file whose contents are saved
	// ShellJob accepts terminals: they are external, replaced on restore
	// by the restorer's own terminal.
	ShellJob bool
	// TCPLocked holds the inodes of the TCP connections the network lock
	// covers (--tcp-established): those are dumped in repair mode; any
	// other connection is refused.
	TCPLocked map[uint64]bool
	// ExtUnixSk accepts unix sockets whose peer is outside the dump: they
	// connect to the peer's name again on restore (see CheckSockets).
	ExtUnixSk bool
	// LeaveRunning: the target runs on after the dump, so nothing may be
	// taken from it (unaccepted connections with data are refused).
	LeaveRunning bool
	// Console accepts a container's console (process.terminal): slaves of
	// the container's own devpts whose master is outside the dump are
	// recorded as FILE_CONSOLE, reopened in the restored container.
	Console bool
	// NoExtPipes refuses a pipe with an end held outside the dump instead
	// of recording it as external (see Check).
	NoExtPipes bool
	// ExtPipes are the pipes (by inode) that are recorded as external even
	// with NoExtPipes: a container's stdio pipes to its monitor (conmon,
	// a containerd shim), which the runtime's restore hands back.
	ExtPipes map[uint64]bool
	// FileLocks records the file locks of the tree (--file-locks);
	// without it a tree holding any is refused.
	FileLocks bool
	// SkipInFlight dumps TCP listeners without the connections waiting
	// in their accept queue (--skip-in-flight); without it such a
	// listener is refused.
	SkipInFlight bool
	// TCPClose records TCP connections without their state, to be
	// restored closed (--tcp-close); TCPLocked is then empty.
	TCPClose bool
}

// IsTerminal reports whether a character device number is a tty: the
// console/virtual terminals (major 4), /dev/tty and /dev/ptmx (major 5) or
// a pseudo-terminal slave (majors 136-143).
func IsTerminal(rdev uint64) bool {
	major := unix.Major(rdev)
	return major == 4 || (major == 5 && unix.Minor(rdev) != 1) || (major >= 136 && major <= 143)
}

// Table is the dumped state of a task's files.
type Table struct {
	Files []*imagepb.FileEntry
	// Objects are the memfd objects whose contents go to
	// pagemap-shmem-<ino>.img; the caller dumps them from the held fds.
	Objects     []Object
	held        []int // fds stolen into the dumper, closed by Close
	nextID      uint32
	byKey       map[string]uint32
	seen        map[[2]uint64][]seenFd
	diag        *unixsk.Diag        // unix sockets of our network namespace, read once
	inet        *inetsk.Diag        // inet sockets of our network namespace, read on first use
	opts        Options             // of the DumpFds call in progress (for files in flight)
	unixAt      map[uint64]fdRef    // unix socket inode -> where it was first seen
	repairs     []repairing         // TCP connections dumped (in repair mode only for a kill)
	epolls      []epollRef          // epoll sets whose targets ResolveEpoll finds
	ptys        []ptyEnd            // pty ends seen by DumpFds, completed by DumpPtys
	ptyHeld     []*ptyHeld          // pairs whose queued data was read out
	consoleHeld map[uint32]*ptyHeld // consoles whose input typed ahead was read out, by index (slave: our copy of the task's)
	locks       lockState           // file locks read from fdinfo (see fdLocks)
}

type repairing struct {
	fd int
	s  *imagepb.InetSocket
}

// EndRepair takes every TCP connection the dump put in repair mode out of
// it, for a dump that leaves its tasks running (or failed). Call it
// before Close; a dump whose tasks are killed must not (their connections
// then end silently). Connections are out of repair mode once dumped
// (see inetSocket): this is for safety.
func (t *Table) EndRepair() error {
	var errs []error
	for _, r := range t.repairs {
		if err := inetsk.EndRepair(r.fd, r.s); err != nil {
			errs = append(errs, err)
		}
	}
	t.repairs = nil
	return errors.Join(errs...)
}

// RepairForKill puts every dumped TCP connection back in repair mode just
// before its tasks are killed, so that the connections end silently (no
// FIN, no RST, no socket left in the kernel on their address). Call it
// before Close.
func (t *Table) RepairForKill() error {
	var errs []error
	for _, r := range t.repairs {
		if err := unix.SetsockoptInt(r.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
			errs = append(errs, fmt.Errorf("%s: TCP_REPAIR on: %w", inetsk.Describe(r.s), err))
		}
	}
	return errors.Join(errs...)
}

// fdRef names an fd of a dumped process, and our copy of it.
type fdRef struct{ pid, fd, cp int }

// Object is a memory-backed file whose contents must be dumped.
type Object struct {
	FileID uint32
	Ino    uint64
	Size   int64
	Fd     int // our copy
}

// Close releases the fds stolen from the target.
func (t *Table) Close() {
	for _, fd := range t.held {
		unix.Close(fd)
	}
	t.held = nil
}

// NewTable starts an empty table; ids start at 1.
func NewTable() *Table {
	return &Table{nextID: 1, byKey: map[string]uint32{}, seen: map[[2]uint64][]seenFd{}, unixAt: map[uint64]fdRef{}}
}

func (t *Table) add(key string, f *imagepb.FileEntry) uint32 {
	if id, ok := t.byKey[key]; ok && key != "" {
		return id
	}
	f.Id = t.nextID
	t.nextID++
	t.Files = append(t.Files, f)
	if key != "" {
		t.byKey[key] = f.Id
	}
	return f.Id
}

// DumpFds records every fd of pid and returns its fd table. Fds are stolen
// with pidfd_getfd to learn what they are; the target is not changed. An
// open file description already seen (in this or another process of the
// dump: dup, fork, SCM_RIGHTS) is recorded once, found with kcmp.
func (t *Table) DumpFds(pid int, opts Options) ([]*imagepb.FdEntry, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	t.opts = opts
	fds, err := procfs.Fds(pid)
	if err != nil {
		return nil, err
	}
	var out []*imagepb.FdEntry
	for _, fd := range fds {
		link, err := procfs.FdLink(pid, fd)
		if err != nil {
			return nil, fmt.Errorf("fd %d: %w", fd, err)
		}
		fi, err := procfs.ReadFdInfo(pid, fd)
		if err != nil {
			return nil, fmt.Errorf("fd %d (%s): %w", fd, link, err)
		}
		cp, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err != nil {
			return nil, fmt.Errorf("fd %d (%s): pidfd_getfd: %w", fd, link, err)
		}
		t.held = append(t.held, cp)
		var st unix.Stat_t
		if err := unix.Fstat(cp, &st); err != nil {
			return nil, fmt.Errorf("fd %d (%s): fstat: %w", fd, link, err)
		}
		key := [2]uint64{st.Dev, st.Ino}
		var id uint32
		for _, s := range t.seen[key] {
			if r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(s.pid), uintptr(pid), 0 /*KCMP_FILE*/, uintptr(s.fd), uintptr(fd), 0); e == 0 && r == 0 {
				id = s.id
				break
			}
		}
		if id == 0 {
			id, err = t.recordFile(pid, fd, cp, link, fi, &st, opts)
			if err != nil {
				return nil, err
			}
			if err := t.recordFown(id, cp); err != nil {
				return nil, fmt.Errorf("fd %d (%s): %w", fd, link, err)
			}
			t.seen[key] = append(t.seen[key], seenFd{pid: pid, fd: fd, id: id})
		}
		out = append(out, &imagepb.FdEntry{Fd: int32(fd), FileId: id, Cloexec: fi.Flags&unix.O_CLOEXEC != 0})
		if err := t.fdLocks(pid, fd, link, fi, out[len(out)-1], opts); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// seenFd is an open file description already described, for kcmp.
type seenFd struct {
	pid, fd int
	id      uint32
}

// recordFile builds the file entry for a newly seen open file description
// through the code of its kind: found by file type, anon inode name or
// socket family (kinds.go).
func (t *Table) recordFile(pid, fd, cp int, link string, fi *procfs.FdInfo, st *unix.Stat_t, opts Options) (uint32, error) {
	flags := fi.Flags &^ unix.O_CLOEXEC
	f := &imagepb.FileEntry{
		Path: link, Flags: flags, Pos: fi.Pos, Mode: st.Mode, Size: st.Size,
		Rdev: st.Rdev, Dev: st.Dev, Ino: st.Ino, Uid: st.Uid, Gid: st.Gid,
		MtimeNs: uint64(st.Mtim.Nano()),
	}
	d := &fdBeingDumped{pid: pid, fd: fd, cp: cp, link: link, fi: fi, st: st, opts: opts}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK:
		return t.regularFile(f, d)
	case unix.S_IFCHR:
		return t.charDevice(f, d)
	case unix.S_IFIFO:
		return t.pipeOrFifo(f, d)
	case unix.S_IFSOCK:
		return t.dumpSocket(f, d)
	}
	if strings.HasPrefix(link, "anon_inode:") {
		return t.dumpAnon(f, d)
	}
	return 0, &UnsupportedError{Fd: fd, Link: link, Kind: fmt.Sprintf("mode %#o", st.Mode&unix.S_IFMT)}
}

// AddMapped records a file mapped by a VMA (not necessarily open as an fd)
// and returns its id; mappings of the same inode share one entry.
func (t *Table) AddMapped(pid int, v *procfs.SmapsEntry, opts Options) (uint32, error) {
	key := fmt.Sprintf("map:%d:%d:%d", v.DevMajor, v.DevMinor, v.Inode)
	if id, ok := t.byKey[key]; ok {
		return id, nil
	}
	mf := fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, v.Start, v.End)
	fd, err := unix.Open(mf, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s (%s): %w", mf, v.Path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return 0, fmt.Errorf("fstat %s: %w", mf, err)
	}
	f := &imagepb.FileEntry{Path: v.Path, Flags: unix.O_RDONLY, Mode: st.Mode, Size: st.Size, Dev: st.Dev, Ino: st.Ino, Uid: st.Uid, Gid: st.Gid, MtimeNs: uint64(st.Mtim.Nano())}
	switch {
	case strings.HasPrefix(v.Path, "/memfd:"):
		f.Kind = imagepb.FileKind_FILE_MEMFD
		f.Path = strings.TrimPrefix(v.Path, "/memfd:")
		if err := memfdState(f, fd); err != nil {
			unix.Close(fd)
			return 0, fmt.Errorf("%s: %s: unsupported", v.Path, err)
		}
	case v.Shared && v.Deleted && strings.HasPrefix(v.Path, "/dev/zero"):
		f.Kind = imagepb.FileKind_FILE_SHMEM
	case v.Shared && v.Deleted && v.Path == "/anon_hugepage" && v.HasFlag("ht"):
		// MAP_SHARED|MAP_ANONYMOUS|MAP_HUGETLB: an object of huge pages
		f.Kind, f.HugetlbPageSize = imagepb.FileKind_FILE_SHMEM, v.KernelPageSize
	case v.Deleted:
		f.Kind = imagepb.FileKind_FILE_REG
		if err := t.ghost(f, fd, v.Path+" (deleted)", opts); err != nil {
			unix.Close(fd)
			return 0, err
		}
	default:
		f.Kind = imagepb.FileKind_FILE_REG
	}
	id := t.add(key, f)
	if f.Kind == imagepb.FileKind_FILE_MEMFD || f.Kind == imagepb.FileKind_FILE_SHMEM {
		// the memfd may also be open as an fd: one object, one dump
		for _, o := range t.Objects {
			if o.Ino == st.Ino {
				unix.Close(fd)
				return o.FileID, nil
			}
		}
		t.held = append(t.held, fd)
		t.Objects = append(t.Objects, Object{FileID: id, Ino: st.Ino, Size: st.Size, Fd: fd})
		return id, nil
	}
	unix.Close(fd)
	return id, nil
}

// fdinfo field helpers
func fieldUint(fi *procfs.FdInfo, key string, base int) (uint64, bool) {
	s, ok := fi.Field(key)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(strings.Fields(s)[0], base, 64)
	return v, err == nil
}

// AddPath records a file that is referenced by path only (e.g. an exe that
// is not mapped) and returns its id.
func (t *Table) AddPath(path string) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return t.add("path:"+path, &imagepb.FileEntry{Kind: imagepb.FileKind_FILE_REG, Path: path, Flags: unix.O_RDONLY, Mode: st.Mode, Size: st.Size, Dev: st.Dev, Ino: st.Ino}), nil
}

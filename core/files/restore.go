package files

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Opener opens, in the restorer, the files of an image: each file entry once,
// so fds that shared an open file description share one again. The opened
// fds are then moved into the restored task (pidfd_getfd) by the caller.
// Ghost files are recreated at their path and unlinked by Finish.
type Opener struct {
	files    map[uint32]*imagepb.FileEntry
	open     map[uint32]int
	pipes    map[uint64][2]int
	ghosts   []string
	ghostBy  map[[2]uint64]string // (dev, ino) of the dumped file -> recreated path
	fifos    map[string]int       // FIFO path -> an O_RDWR fd holding it open
	ptys     map[uint32]*ptyPair  // recreated pty pairs by index
	consoles map[uint32]int       // our fd of each container console, by index
	Objects  map[uint32]int       // memfd/shmem objects by file id (filled by the caller for shmem)
	// PidOf maps a pid of the image to the restored process (our pid
	// namespace), for pidfds.
	PidOf func(pid int32) (int, bool)
	// Terminal is the restorer's terminal that replaces a shell job's
	// terminal (--shell-job), or -1.
	Terminal int
	// unixBuilt: every unix socket of the image was created (on the
	// first use of one); unixBuilding guards against files in flight
	// that are unix sockets.
	unixBuilt, unixBuilding bool
	rootFd                  int // SetRoot: paths resolve in this directory (0: ctr-cr's root)
	rootPid                 int // SetRoot: the process whose root and mount namespace that is
}

// NewOpener indexes the file entries of an image.
func NewOpener(entries []*imagepb.FileEntry) (*Opener, error) {
	o := &Opener{files: map[uint32]*imagepb.FileEntry{}, open: map[uint32]int{}, pipes: map[uint64][2]int{}, Objects: map[uint32]int{}, ghostBy: map[[2]uint64]string{}, fifos: map[string]int{}, ptys: map[uint32]*ptyPair{}, consoles: map[uint32]int{}, Terminal: -1}
	for _, f := range entries {
		if f.Id == 0 {
			return nil, errors.New("files.img: file entry with id 0")
		}
		if _, dup := o.files[f.Id]; dup {
			return nil, fmt.Errorf("files.img: duplicate file id %d", f.Id)
		}
		o.files[f.Id] = f
	}
	return o, nil
}

// Entry returns the file entry with id.
func (o *Opener) Entry(id uint32) (*imagepb.FileEntry, error) {
	f, ok := o.files[id]
	if !ok {
		return nil, fmt.Errorf("file id %d not in files.img", id)
	}
	return f, nil
}

// Check verifies, before anything is restored, that every file the image
// refers to by path still exists as a file of the same type and size, and
// that the pty ends of the image make whole pairs.
func (o *Opener) Check() error {
	if err := o.checkPtys(); err != nil {
		return err
	}
	if err := o.checkConsoles(); err != nil {
		return err
	}
	for _, f := range o.files {
		if f.Deleted {
			dir := filepath.Dir(f.Path)
			var st unix.Stat_t
			if err := o.statPath(dir, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
				return fmt.Errorf("deleted file %s: its directory is missing, cannot recreate it", f.Path)
			}
			if int64(len(f.GhostData)) != f.Size {
				return fmt.Errorf("deleted file %s: image holds %d bytes, size was %d", f.Path, len(f.GhostData), f.Size)
			}
			continue
		}
		switch f.Kind {
		case imagepb.FileKind_FILE_INOTIFY:
			if err := checkInotify(f); err != nil {
				return err
			}
		case imagepb.FileKind_FILE_REG, imagepb.FileKind_FILE_DIR, imagepb.FileKind_FILE_CHR, imagepb.FileKind_FILE_FIFO:
			if IsProcPidPath(f.Path) {
				continue // a task's /proc files exist once the task does
			}
			var st unix.Stat_t
			if err := o.statPath(f.Path, &st); err != nil {
				return fmt.Errorf("file %s: %w", f.Path, err)
			}
			if st.Mode&unix.S_IFMT != f.Mode&unix.S_IFMT {
				return fmt.Errorf("file %s: type changed since the dump (mode %#o, was %#o)", f.Path, st.Mode&unix.S_IFMT, f.Mode&unix.S_IFMT)
			}
			if f.Kind == imagepb.FileKind_FILE_REG && st.Size != f.Size {
				return fmt.Errorf("file %s: size changed since the dump (%d bytes, was %d)", f.Path, st.Size, f.Size)
			}
			if f.Kind == imagepb.FileKind_FILE_CHR && st.Rdev != f.Rdev {
				return fmt.Errorf("device %s: device number changed since the dump", f.Path)
			}
		}
	}
	return nil
}

// openFlags are the flags a file is reopened with: creation and truncation
// never happen on restore.
func openFlags(f *imagepb.FileEntry) int {
	fl := int(f.Flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_CLOEXEC)
	return fl | unix.O_CLOEXEC | unix.O_NOCTTY
}

// Open returns our fd for file id, opening it on first use.
func (o *Opener) Open(id uint32) (int, error) {
	if fd, ok := o.open[id]; ok {
		return fd, nil
	}
	f, err := o.Entry(id)
	if err != nil {
		return -1, err
	}
	fd, err := o.openEntry(f)
	if err != nil {
		return -1, fmt.Errorf("file %d (%s): %w", id, f.Path, err)
	}
	o.open[id] = fd
	return fd, nil
}

// OpenForMap returns an fd suitable to mmap file id with prot/shared.
func (o *Opener) OpenForMap(id uint32, write bool) (int, error) {
	f, err := o.Entry(id)
	if err != nil {
		return -1, err
	}
	switch f.Kind {
	case imagepb.FileKind_FILE_MEMFD, imagepb.FileKind_FILE_SHMEM:
		fd, ok := o.Objects[id]
		if !ok {
			return -1, fmt.Errorf("file %d (%s): memory object not created", id, f.Path)
		}
		return fd, nil
	}
	path := f.Path
	if f.Deleted {
		// recreate the ghost file (once per inode), then map it by path
		if _, err := o.Open(id); err != nil {
			return -1, err
		}
		path = o.ghostBy[[2]uint64{f.Dev, f.Ino}]
	}
	key := id | 1<<31
	if write {
		key = id | 1<<30
	}
	if fd, ok := o.open[key]; ok {
		return fd, nil
	}
	mode := unix.O_RDONLY
	if write {
		mode = unix.O_RDWR
	}
	fd, err := o.openPath(path, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s for mapping: %w", path, err)
	}
	o.open[key] = fd
	return fd, nil
}

func (o *Opener) openEntry(f *imagepb.FileEntry) (int, error) {
	switch f.Kind {
	case imagepb.FileKind_FILE_REG, imagepb.FileKind_FILE_DIR, imagepb.FileKind_FILE_CHR:
		if f.Deleted {
			return o.ghost(f)
		}
		fd, err := o.openPath(f.Path, openFlags(f), 0)
		if err != nil {
			return -1, err
		}
		if f.Kind != imagepb.FileKind_FILE_CHR && f.Flags&unix.O_PATH == 0 && f.Pos != 0 {
			if _, err := unix.Seek(fd, f.Pos, 0); err != nil {
				unix.Close(fd)
				return -1, fmt.Errorf("seek to %d: %w", f.Pos, err)
			}
		}
		return fd, nil
	case imagepb.FileKind_FILE_MEMFD:
		obj, ok := o.Objects[f.Id]
		if !ok {
			return -1, errors.New("memfd object not created")
		}
		fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", obj), openFlags(f), 0)
		if err != nil {
			return -1, err
		}
		if f.Pos != 0 {
			if _, err := unix.Seek(fd, f.Pos, 0); err != nil {
				unix.Close(fd)
				return -1, err
			}
		}
		return fd, nil
	case imagepb.FileKind_FILE_PIPE:
		return o.pipeEnd(f)
	case imagepb.FileKind_FILE_FIFO:
		return o.fifoEnd(f)
	case imagepb.FileKind_FILE_EVENTFD:
		fl := unix.EFD_CLOEXEC
		if f.Flags&1 != 0 {
			fl |= unix.EFD_SEMAPHORE
		}
		if f.Flags&unix.O_NONBLOCK != 0 {
			fl |= unix.EFD_NONBLOCK
		}
		if f.Pos < 0 || f.Pos > 1<<32-1 {
			// eventfd(2) takes an unsigned int initial value; larger
			// counts are added with a write.
			fd, err := unix.Eventfd(0, fl|unix.EFD_NONBLOCK)
			if err != nil {
				return -1, err
			}
			var b [8]byte
			putU64(b[:], uint64(f.Pos))
			if _, err := unix.Write(fd, b[:]); err != nil {
				unix.Close(fd)
				return -1, err
			}
			if fl&unix.EFD_NONBLOCK == 0 || f.Flags&unix.O_NONBLOCK == 0 {
				unix.SetNonblock(fd, f.Flags&unix.O_NONBLOCK != 0)
			}
			return fd, nil
		}
		return unix.Eventfd(uint(f.Pos), fl)
	case imagepb.FileKind_FILE_EPOLL:
		return unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	case imagepb.FileKind_FILE_TIMERFD, imagepb.FileKind_FILE_SIGNALFD, imagepb.FileKind_FILE_INOTIFY:
		return o.openAnon(f)
	case imagepb.FileKind_FILE_UNIX:
		return o.socketEnd(f)
	case imagepb.FileKind_FILE_INET:
		return openInet(f)
	case imagepb.FileKind_FILE_PTY:
		return o.openPty(f)
	case imagepb.FileKind_FILE_CONSOLE:
		return o.openConsoleEntry(f)
	case imagepb.FileKind_FILE_TTY:
		if o.Terminal < 0 {
			return -1, errors.New("the image holds a shell job's terminal: restore it with --shell-job from a terminal")
		}
		return unix.FcntlInt(uintptr(o.Terminal), unix.F_DUPFD_CLOEXEC, 0)
	case imagepb.FileKind_FILE_PIDFD:
		if o.PidOf == nil {
			return -1, errors.New("pidfd: no process map")
		}
		pid, ok := o.PidOf(f.PidfdPid)
		if !ok {
			return -1, fmt.Errorf("pidfd of pid %d: not a restored process", f.PidfdPid)
		}
		fl := int(f.Flags) & (unix.O_NONBLOCK | unix.O_EXCL) // PIDFD_NONBLOCK, PIDFD_THREAD
		return unix.PidfdOpen(pid, fl)
	}
	return -1, fmt.Errorf("unsupported file kind %v", f.Kind)
}

func putU64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
}

// ghost recreates a file that was deleted while open: at its old path when
// free (so /proc/PID/fd shows the same name), contents and mode restored;
// Finish unlinks it again.
func (o *Opener) ghost(f *imagepb.FileEntry) (int, error) {
	key := [2]uint64{f.Dev, f.Ino}
	if path, ok := o.ghostBy[key]; ok {
		// the same deleted file open or mapped again: one inode
		return o.openGhost(f, path)
	}
	path := f.Path
	fd, err := o.openPath(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, f.Mode&0o7777)
	for i := 0; err == unix.EEXIST && i < 100; i++ {
		path = fmt.Sprintf("%s.ctr-cr-ghost.%d", f.Path, i)
		fd, err = o.openPath(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, f.Mode&0o7777)
	}
	if err != nil {
		return -1, fmt.Errorf("recreate deleted file: %w", err)
	}
	o.ghosts = append(o.ghosts, path)
	o.ghostBy[key] = path
	for off := 0; off < len(f.GhostData); {
		n, err := unix.Pwrite(fd, f.GhostData[off:], int64(off))
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("write deleted file contents: %w", err)
		}
		off += n
	}
	unix.Fchmod(fd, f.Mode&0o7777)
	unix.Fchown(fd, int(f.Uid), int(f.Gid))
	unix.Close(fd)
	return o.openGhost(f, path)
}

// openGhost opens a recreated ghost file with the entry's flags and offset.
func (o *Opener) openGhost(f *imagepb.FileEntry, path string) (int, error) {
	rfd, err := o.openPath(path, openFlags(f), 0)
	if err != nil {
		return -1, err
	}
	if f.Pos != 0 {
		if _, err := unix.Seek(rfd, f.Pos, 0); err != nil {
			unix.Close(rfd)
			return -1, err
		}
	}
	return rfd, nil
}

// pipeEnd creates the pipe on first use (capacity and queued bytes restored)
// and returns the requested end.
func (o *Opener) pipeEnd(f *imagepb.FileEntry) (int, error) {
	p, ok := o.pipes[f.Ino]
	if !ok {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			return -1, err
		}
		p = fds
		o.pipes[f.Ino] = p
		if f.Size > 0 {
			if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, int(f.Size)); err != nil {
				return -1, fmt.Errorf("F_SETPIPE_SZ %d: %w", f.Size, err)
			}
		}
	}
	if len(f.GhostData) > 0 {
		for off := 0; off < len(f.GhostData); {
			n, err := unix.Write(p[1], f.GhostData[off:])
			if err != nil {
				return -1, fmt.Errorf("refill pipe: %w", err)
			}
			off += n
		}
	}
	end := p[0]
	if f.Flags&unix.O_ACCMODE == unix.O_WRONLY {
		end = p[1]
	}
	// the two ends are separate open file descriptions: each gets its own
	// O_NONBLOCK setting
	if err := unix.SetNonblock(end, f.Flags&unix.O_NONBLOCK != 0); err != nil {
		return -1, err
	}
	return end, nil
}

// Finish closes every fd the opener holds and unlinks recreated ghost files.
func (o *Opener) Finish() {
	closed := map[int]bool{}
	for _, fd := range o.open {
		if !closed[fd] {
			unix.Close(fd)
			closed[fd] = true
		}
	}
	for _, p := range o.pipes {
		for _, fd := range p {
			if !closed[fd] {
				unix.Close(fd)
				closed[fd] = true
			}
		}
	}
	for _, fd := range o.fifos {
		if !closed[fd] {
			unix.Close(fd)
			closed[fd] = true
		}
	}
	o.fifos = map[string]int{}
	o.closePtys(closed)
	o.closeConsoles(closed)
	for _, fd := range o.Objects {
		if !closed[fd] {
			unix.Close(fd)
			closed[fd] = true
		}
	}
	o.open, o.pipes, o.Objects = map[uint32]int{}, map[uint64][2]int{}, map[uint32]int{}
	for _, g := range o.ghosts {
		o.removePath(g)
	}
	o.ghosts = nil
}

// IsMemObject reports kinds whose contents come from pagemap-shmem-<ino>.
func IsMemObject(f *imagepb.FileEntry) bool {
	return f.Kind == imagepb.FileKind_FILE_MEMFD || f.Kind == imagepb.FileKind_FILE_SHMEM
}

// MemfdName is the name to give memfd_create for an entry.
func MemfdName(f *imagepb.FileEntry) string {
	return strings.TrimSuffix(f.Path, " (deleted)")
}

// fifoEnd opens a named pipe end. The FIFO is first held open read-write
// (which never blocks, and keeps the pipe alive) and refilled with the bytes
// it queued; the end itself is then opened non-blocking, and the dumped
// O_NONBLOCK setting applied.
func (o *Opener) fifoEnd(f *imagepb.FileEntry) (int, error) {
	hold, ok := o.fifos[f.Path]
	if !ok {
		var err error
		if hold, err = o.openPath(f.Path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err != nil {
			return -1, err
		}
		o.fifos[f.Path] = hold
		if f.Size > 0 {
			unix.FcntlInt(uintptr(hold), unix.F_SETPIPE_SZ, int(f.Size))
		}
	}
	if len(f.GhostData) > 0 {
		for off := 0; off < len(f.GhostData); {
			n, err := unix.Write(hold, f.GhostData[off:])
			if err != nil {
				return -1, fmt.Errorf("refill fifo: %w", err)
			}
			off += n
		}
	}
	fd, err := o.openPath(f.Path, openFlags(f)|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.SetNonblock(fd, f.Flags&unix.O_NONBLOCK != 0); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// HasTerminal reports whether the image holds a shell job's terminal.
func (o *Opener) HasTerminal() bool {
	for _, f := range o.files {
		if f.Kind == imagepb.FileKind_FILE_TTY {
			return true
		}
	}
	return false
}

// IsProcPidPath reports whether path lies under /proc/<number>/: the files
// of one task, which may be one of the tree being restored (its /proc
// directory appears with it).
func IsProcPidPath(path string) bool {
	rest, ok := strings.CutPrefix(path, "/proc/")
	if !ok {
		return false
	}
	n, _, _ := strings.Cut(rest, "/")
	if n == "" {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

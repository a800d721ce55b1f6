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
	pipes    map[uint64]*restoredPipe         // by pipe inode of the image
	pipeData map[[2]uint64]*imagepb.FileEntry // the entry holding a pipe's or FIFO's queued data, by (dev, ino)
	ghostBy  map[[2]uint64]*ghostInode        // (dev, ino) of the dumped file -> its recreated inode
	fifos    map[string]int                   // FIFO path -> an O_RDWR fd holding it open
	ptys     map[uint32]*ptyPair              // recreated pty pairs by index
	consoles map[uint32]int                   // our fd of each container console, by index
	objects  map[uint32]int                   // memfd/shmem objects by file id (AddObject)
	// pidOf maps a pid of the image to the restored process (our pid
	// namespace), for pidfds (WithPids).
	pidOf func(pid int32) (int, bool)
	// deadPidfd makes a pidfd (flags) of a reaped process that ended
	// with wait status (when known), for pidfds of exited processes
	// (WithPids).
	deadPidfd func(flags int, status int32, known bool) (int, error)
	// terminal is the restorer's terminal that replaces a shell job's
	// terminal (WithTerminal), or -1.
	terminal int
	// inherit are fds of ours that replace files of the image whose other
	// side is outside it, by CRIU's key (WithInherit).
	inherit map[string]int
	// unixBuilt: every unix socket of the image was created (on the
	// first use of one); unixBuilding guards against files in flight
	// that are unix sockets.
	unixBuilt, unixBuilding bool
	rootFd                  int             // SetRoot: paths resolve in this directory (0: ctr-cr's root)
	rootPid                 int             // SetRoot: the process whose root and mount namespace that is
	asyncDone               map[uint32]bool // AsyncOnce: O_ASYNC files already registered
}

// NewOpener indexes the file entries of an image, configured by opts
// (WithTerminal, WithInherit, WithPids); the configuration is fixed from
// then on.
func NewOpener(entries []*imagepb.FileEntry, opts ...OpenerOption) (*Opener, error) {
	o := &Opener{files: map[uint32]*imagepb.FileEntry{}, open: map[uint32]int{}, pipes: map[uint64]*restoredPipe{}, objects: map[uint32]int{}, ghostBy: map[[2]uint64]*ghostInode{}, fifos: map[string]int{}, ptys: map[uint32]*ptyPair{}, consoles: map[uint32]int{}, terminal: -1}
	for _, opt := range opts {
		opt(o)
	}
	for _, f := range entries {
		if f.Id == 0 {
			return nil, errors.New("files.img: file entry with id 0")
		}
		if _, dup := o.files[f.Id]; dup {
			return nil, fmt.Errorf("files.img: duplicate file id %d", f.Id)
		}
		o.files[f.Id] = f
	}
	if err := o.indexPipeData(); err != nil {
		return nil, err
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
	if err := o.checkExternalPipes(); err != nil {
		return err
	}
	if err := o.checkExternalSockets(); err != nil {
		return err
	}
	for _, f := range o.files {
		if err := o.checkEntry(f); err != nil {
			return err
		}
	}
	return nil
}

// checkDeleted verifies that a deleted file of the image can be recreated:
// its directory exists, and its saved contents are sound (a FIFO has none).
func (o *Opener) checkDeleted(f *imagepb.FileEntry) error {
	dir := filepath.Dir(f.Path)
	var st unix.Stat_t
	if err := o.statPath(dir, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("deleted file %s: its directory is missing, cannot recreate it", f.Path)
	}
	if f.Kind != imagepb.FileKind_FILE_FIFO {
		return checkGhost(f)
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
	if IsMemObject(f) {
		fd, ok := o.objects[id]
		if !ok {
			return -1, fmt.Errorf("file %d (%s): memory object not created", id, f.Path)
		}
		if write {
			return fd, nil
		}
		// a shared mapping made through a read-only fd lacks VM_MAYWRITE:
		// map it through a read-only open of the object too
		return o.reopenReadOnly(id, fd)
	}
	if f.Deleted {
		// recreate the ghost file (once per inode) before mapping it
		if _, err := o.Open(id); err != nil {
			return -1, err
		}
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
	path := f.Path
	var fd int
	if g := o.ghostBy[[2]uint64{f.Dev, f.Ino}]; f.Deleted && g != nil {
		fd, err = g.reopen(o, mode|unix.O_CLOEXEC)
	} else {
		fd, err = o.openPath(path, mode|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return -1, fmt.Errorf("open %s for mapping: %w", path, err)
	}
	o.open[key] = fd
	return fd, nil
}

// reopenReadOnly opens memory object fd (file id) again read-only, once.
func (o *Opener) reopenReadOnly(id uint32, fd int) (int, error) {
	key := id | 1<<31
	if ro, ok := o.open[key]; ok {
		return ro, nil
	}
	ro, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("reopen memory object %d read-only: %w", id, err)
	}
	o.open[key] = ro
	return ro, nil
}

// Finish closes every fd the opener holds and unlinks recreated ghost
// files; the opener can then open the image's files again from scratch.
func (o *Opener) Finish() {
	closed := map[int]bool{}
	for _, fd := range o.open {
		if !closed[fd] {
			unix.Close(fd)
			closed[fd] = true
		}
	}
	for _, p := range o.pipes {
		for _, fd := range p.base {
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
	for _, fd := range o.objects {
		if !closed[fd] {
			unix.Close(fd)
			closed[fd] = true
		}
	}
	o.open, o.pipes, o.objects = map[uint32]int{}, map[uint64]*restoredPipe{}, map[uint32]int{}
	o.closeGhosts()
	// a restore tried again (a pid race, see core/restore) builds them anew
	o.unixBuilt, o.unixBuilding, o.asyncDone = false, false, nil
}

// IsMemObject reports kinds whose contents come from pagemap-shmem-<ino>.
func IsMemObject(f *imagepb.FileEntry) bool {
	return f.Kind == imagepb.FileKind_FILE_MEMFD || f.Kind == imagepb.FileKind_FILE_SHMEM
}

// MemfdName is the name to give memfd_create for an entry.
func MemfdName(f *imagepb.FileEntry) string {
	return strings.TrimSuffix(f.Path, " (deleted)")
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

package files

import (
	"errors"
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// External pipes: a pipe of the dump whose other end a process outside the
// dump held (a daemon's stdout going to a logger, prog | tee). As with CRIU
// and runc, the caller of the restore hands in an end of the pipe to use
// instead: --inherit-fd fd[N]:pipe:[INO], N an fd of the restoring ctr-cr.

// checkExternalPipes verifies, before anything is restored, that every
// external pipe of the image has an inherited fd, and that it is a pipe.
func (o *Opener) checkExternalPipes() error {
	var missing []uint64
	seen := map[uint64]bool{}
	for _, f := range o.files {
		if f.Kind != imagepb.FileKind_FILE_PIPE || !f.PipeExternal || seen[f.Ino] {
			continue
		}
		seen[f.Ino] = true
		fd, ok := o.inherit[InheritPipeKey(f.Ino)]
		if !ok {
			missing = append(missing, f.Ino)
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fmt.Errorf("--inherit-fd fd[%d]:%s: %w", fd, InheritPipeKey(f.Ino), err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFIFO {
			return fmt.Errorf("--inherit-fd fd[%d]:%s: fd %d is not a pipe (mode %#o)", fd, InheritPipeKey(f.Ino), fd, st.Mode&unix.S_IFMT)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Slice(missing, func(i, j int) bool { return missing[i] < missing[j] })
	var errs []error
	for _, ino := range missing {
		errs = append(errs, fmt.Errorf("pipe:[%d] has its other end outside the image: restore it with --inherit-fd fd[N]:%s (N: an fd of ctr-cr that is an end of the pipe to use)", ino, InheritPipeKey(ino)))
	}
	return errors.Join(errs...)
}

// inheritedPipe makes the restoredPipe of an external pipe from the
// inherited fd: a duplicate of it (the same open file description) serves
// the descriptions of its end that pipe2 made, any other description is
// opened through /proc/self/fd. The caller's pipe keeps its capacity. Data
// queued toward the dumped tree (the image has a read end) is written into
// it when it is another pipe than the dumped one; data queued toward the
// outside stays in the old pipe, with its reader.
func (o *Opener) inheritedPipe(f *imagepb.FileEntry) (*restoredPipe, error) {
	key := InheritPipeKey(f.Ino)
	n, ok := o.inherit[key]
	if !ok {
		return nil, fmt.Errorf("%s has its other end outside the image: restore it with --inherit-fd fd[N]:%s", key, key)
	}
	dup, err := unix.FcntlInt(uintptr(n), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("--inherit-fd fd[%d]:%s: %w", n, key, err)
	}
	p := &restoredPipe{base: [2]int{dup, dup}}
	o.pipes[f.Ino] = p // Finish closes the duplicate
	fl, err := unix.FcntlInt(uintptr(dup), unix.F_GETFL, 0)
	if err != nil {
		return nil, fmt.Errorf("--inherit-fd fd[%d]:%s: F_GETFL: %w", n, key, err)
	}
	switch fl & unix.O_ACCMODE {
	case unix.O_RDONLY:
		p.used[1] = true // a write end is opened through /proc
	case unix.O_WRONLY:
		p.used[0] = true
	default:
		p.used = [2]bool{true, true}
	}
	if fl&int(oLargefile) != 0 {
		p.used = [2]bool{true, true} // not an end pipe2 made
	}
	d := o.pipeData[[2]uint64{f.Dev, f.Ino}]
	if d == nil || !o.hasReadEnd(f.Ino) {
		return p, nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(dup, &st); err != nil {
		return nil, fmt.Errorf("--inherit-fd fd[%d]:%s: %w", n, key, err)
	}
	if st.Ino == f.Ino {
		return p, nil // the very pipe: its data is still queued in it
	}
	w, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", dup), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("--inherit-fd fd[%d]:%s: open for the queued data: %w", n, key, err)
	}
	defer unix.Close(w)
	if err := refillPipe(w, d); err != nil {
		return nil, fmt.Errorf("%s (--inherit-fd fd[%d]): %w", key, n, err)
	}
	return p, nil
}

// hasReadEnd reports whether the image holds a read description of pipe ino.
func (o *Opener) hasReadEnd(ino uint64) bool {
	for _, f := range o.files {
		if f.Kind == imagepb.FileKind_FILE_PIPE && f.Ino == ino && f.Flags&unix.O_ACCMODE != unix.O_WRONLY {
			return true
		}
	}
	return false
}

package files

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// restoredPipe is a pipe recreated for the image. base are the two ends
// pipe2 made, held by the opener until Finish; used marks a base end handed
// to an entry. Every other description of the pipe is opened through
// /proc/self/fd/<base end>, as it was originally.
type restoredPipe struct {
	base [2]int
	used [2]bool
}

// pipeSetFlags are the flags F_SETFL sets on a pipe description: the
// status flags a dumped description may carry besides its access mode and
// O_LARGEFILE.
const pipeSetFlags = unix.O_NONBLOCK | unix.O_APPEND | unix.O_DIRECT | unix.O_NOATIME

// oLargefile is the kernel's O_LARGEFILE (golang.org/x/sys has 0 on 64-bit
// systems, where open(2) adds it implicitly). pipe2(2) makes ends without
// it; any description opened by path or through /proc has it.
var oLargefile = map[string]uint32{"arm64": 0o400000, "arm": 0o400000, "ppc64": 0o200000, "ppc64le": 0o200000}[runtime.GOARCH]

func init() {
	if oLargefile == 0 {
		oLargefile = 0o100000 // the generic value (x86, riscv64, s390x, ...)
	}
	// Pipes (FILE_PIPE) and FIFOs (FILE_PIPE opened by path, FILE_FIFO):
	// recorded by Table.pipe and Table.fifo (pipes.go), found by file type.
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_PIPE, open: (*Opener).pipeEnd, describe: describePipe})
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_FIFO, check: (*Opener).checkOnDisk, open: (*Opener).fifoEnd, describe: describePipe})
}

// describePipe names a pipe or FIFO, its queued data, capacity and packets,
// and how to give back an end held outside the image.
func describePipe(f *imagepb.FileEntry) string {
	s := fmt.Sprintf(" pipe %d", f.Ino)
	if len(f.GhostData) > 0 {
		s += fmt.Sprintf(", %d byte(s) queued", len(f.GhostData))
	}
	if f.Size > 0 {
		s += fmt.Sprintf(", capacity %d", f.Size)
	}
	if len(f.PipePackets) > 0 {
		s += fmt.Sprintf(", %d packet(s)", len(f.PipePackets))
	}
	if f.PipeExternal {
		s += fmt.Sprintf(", other end outside: restore with --inherit-fd fd[N]:pipe:[%d]", f.Ino)
	}
	return s
}

// ErrPipeFull is wrapped by the error of a refill whose data does not fit
// the pipe's capacity.
var ErrPipeFull = errors.New("queued data does not fit the pipe")

// indexPipeData finds, for every pipe and FIFO of the image, the entry that
// holds its queued data. The data is written back once per pipe, however
// many descriptions the pipe has; an image with different data on two
// entries of one pipe is refused.
func (o *Opener) indexPipeData() error {
	o.pipeData = map[[2]uint64]*imagepb.FileEntry{}
	for _, f := range o.files {
		if f.Kind != imagepb.FileKind_FILE_PIPE && f.Kind != imagepb.FileKind_FILE_FIFO {
			continue
		}
		if len(f.GhostData) == 0 && len(f.PipePackets) == 0 {
			continue
		}
		total := 0
		for _, n := range f.PipePackets {
			if n == 0 || n > 1<<20 {
				return fmt.Errorf("files.img: pipe:[%d]: bad packet length %d", f.Ino, n)
			}
			total += int(n)
		}
		if len(f.PipePackets) > 0 && total != len(f.GhostData) {
			return fmt.Errorf("files.img: pipe:[%d]: packets of %d bytes for %d queued bytes", f.Ino, total, len(f.GhostData))
		}
		key := [2]uint64{f.Dev, f.Ino}
		if prev := o.pipeData[key]; prev != nil {
			if !bytes.Equal(prev.GhostData, f.GhostData) || !slices.Equal(prev.PipePackets, f.PipePackets) {
				return fmt.Errorf("files.img: pipe:[%d]: two different queued data records", f.Ino)
			}
			continue
		}
		o.pipeData[key] = f
	}
	return nil
}

// pipeEnd returns a description of the pipe of f with f's flags: the pipe
// is created on first use (capacity set, queued data written once); the
// first description of each end without O_LARGEFILE is the end pipe2 made,
// any other is opened through /proc/self/fd like the original was.
func (o *Opener) pipeEnd(f *imagepb.FileEntry) (int, error) {
	p, err := o.pipeOf(f)
	if err != nil {
		return -1, err
	}
	acc := int(f.Flags & unix.O_ACCMODE)
	end := 0
	if acc == unix.O_WRONLY {
		end = 1
	}
	if acc != unix.O_RDWR && f.Flags&oLargefile == 0 && !p.used[end] {
		if err := setPipeFlags(p.base[end], f.Flags); err != nil {
			return -1, fmt.Errorf("pipe:[%d]: %w", f.Ino, err)
		}
		p.used[end] = true
		return p.base[end], nil
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", p.base[end]), acc|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("pipe:[%d]: open another description: %w", f.Ino, err)
	}
	if err := setPipeFlags(fd, f.Flags); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("pipe:[%d]: %w", f.Ino, err)
	}
	return fd, nil
}

// pipeOf returns the recreated pipe of f, creating it on first use.
func (o *Opener) pipeOf(f *imagepb.FileEntry) (*restoredPipe, error) {
	if p, ok := o.pipes[f.Ino]; ok {
		return p, nil
	}
	if f.PipeExternal {
		return o.inheritedPipe(f)
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	p := &restoredPipe{base: fds}
	o.pipes[f.Ino] = p // Finish closes it, also after an error below
	// the pipe's inode is owned by whoever made it (fstat shows it)
	if err := unix.Fchown(fds[0], int(f.Uid), int(f.Gid)); err != nil {
		return nil, fmt.Errorf("pipe:[%d]: chown %d:%d: %w", f.Ino, f.Uid, f.Gid, err)
	}
	d := o.pipeData[[2]uint64{f.Dev, f.Ino}]
	if err := setPipeSize(fds[1], f, d); err != nil {
		return nil, fmt.Errorf("pipe:[%d]: %w", f.Ino, err)
	}
	if d != nil {
		if err := refillPipe(fds[1], d); err != nil {
			return nil, fmt.Errorf("pipe:[%d]: %w", f.Ino, err)
		}
	}
	return p, nil
}

// setPipeSize sets the capacity of the pipe of fd w to the dumped one (the
// entry holding the data knows it; else f).
func setPipeSize(w int, f, data *imagepb.FileEntry) error {
	size := f.Size
	if data != nil && data.Size > 0 {
		size = data.Size
	}
	if size <= 0 {
		return nil
	}
	if size > 1<<31-1 {
		return fmt.Errorf("pipe capacity %d out of range", size)
	}
	if _, err := unix.FcntlInt(uintptr(w), unix.F_SETPIPE_SZ, int(size)); err != nil {
		return fmt.Errorf("F_SETPIPE_SZ %d: %w", size, err)
	}
	return nil
}

// refillPipe writes the queued data of entry d into the pipe through w,
// never blocking: w is switched to non-blocking (and to packet mode for a
// packet pipe, one write per packet) for the refill and set back after; data
// that does not fit is an error wrapping ErrPipeFull.
func refillPipe(w int, d *imagepb.FileEntry) error {
	fl, err := unix.FcntlInt(uintptr(w), unix.F_GETFL, 0)
	if err != nil {
		return fmt.Errorf("F_GETFL: %w", err)
	}
	refill := fl | unix.O_NONBLOCK
	if len(d.PipePackets) > 0 {
		refill |= unix.O_DIRECT
	}
	if _, err := unix.FcntlInt(uintptr(w), unix.F_SETFL, refill&pipeSetFlags); err != nil {
		return fmt.Errorf("F_SETFL for the refill: %w", err)
	}
	defer unix.FcntlInt(uintptr(w), unix.F_SETFL, fl&pipeSetFlags)
	size, _ := unix.FcntlInt(uintptr(w), unix.F_GETPIPE_SZ, 0)
	full := func(off int) error {
		return fmt.Errorf("refill: %w: %d of %d bytes written, capacity %d", ErrPipeFull, off, len(d.GhostData), size)
	}
	if len(d.PipePackets) > 0 {
		off := 0
		for _, n := range d.PipePackets {
			m, err := unix.Write(w, d.GhostData[off:off+int(n)])
			if err == unix.EAGAIN {
				return full(off)
			}
			if err != nil {
				return fmt.Errorf("refill packet: %w", err)
			}
			if m != int(n) {
				return fmt.Errorf("refill packet: %d of %d bytes written", m, n)
			}
			off += int(n)
		}
		return nil
	}
	for off := 0; off < len(d.GhostData); {
		n, err := unix.Write(w, d.GhostData[off:])
		if err == unix.EAGAIN {
			return full(off)
		}
		if err != nil {
			return fmt.Errorf("refill: %w", err)
		}
		off += n
	}
	return nil
}

// setPipeFlags gives the pipe description fd exactly the dumped flags (fdinfo
// flags without O_CLOEXEC), and checks the result. O_ASYNC is left to the
// task itself (AsyncOnce: set from its own fd, after its owner, so that it
// is registered for SIGIO as it was).
func setPipeFlags(fd int, flags uint32) error {
	flags &^= unix.O_ASYNC
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, int(flags)&pipeSetFlags); err != nil {
		return fmt.Errorf("F_SETFL %#o: %w", int(flags)&pipeSetFlags, err)
	}
	got, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return fmt.Errorf("F_GETFL: %w", err)
	}
	if want := flags &^ unix.O_CLOEXEC; uint32(got) != want {
		return fmt.Errorf("flags %#o after restore, want %#o", got, want)
	}
	return nil
}

// fifoEnd opens a named pipe end. The FIFO is first held open read-write
// (which never blocks, and keeps the pipe alive), its capacity set and its
// queued data written back once; the end itself is then opened
// non-blocking (by path, or through /proc/self/fd of the hold for a FIFO
// that was deleted), and given exactly the dumped flags.
func (o *Opener) fifoEnd(f *imagepb.FileEntry) (int, error) {
	if f.Flags&unix.O_PATH != 0 {
		return o.openPath(f.Path, openFlags(f), 0) // the name only
	}
	key := f.Path
	if f.Deleted {
		key = fmt.Sprintf("\x00deleted %d %d", f.Dev, f.Ino)
	}
	hold, ok := o.fifos[key]
	if !ok {
		var err error
		if f.Deleted {
			hold, err = o.recreateDeletedFifo(f)
		} else {
			hold, err = o.openPath(f.Path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		}
		if err != nil {
			return -1, err
		}
		o.fifos[key] = hold
		d := o.pipeData[[2]uint64{f.Dev, f.Ino}]
		if err := setPipeSize(hold, f, d); err != nil {
			return -1, err
		}
		if d != nil {
			if err := refillPipe(hold, d); err != nil {
				return -1, err
			}
		}
	}
	var fd int
	var err error
	if f.Deleted {
		fd, err = unix.Open(fmt.Sprintf("/proc/self/fd/%d", hold), int(f.Flags&unix.O_ACCMODE)|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	} else {
		fd, err = o.openPath(f.Path, (openFlags(f)&^unix.O_DIRECT)|unix.O_NONBLOCK, 0)
	}
	if err != nil {
		return -1, err
	}
	if err := setPipeFlags(fd, f.Flags); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

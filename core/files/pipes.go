package files

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// pipe records one end of a pipe. Pipes are supported when both ends live
// in the dumped task; the queued bytes are copied with tee(2), which leaves
// them in the pipe.
func (t *Table) pipe(f *imagepb.FileEntry, fd, cp int, link string) (uint32, error) {
	f.Kind = imagepb.FileKind_FILE_PIPE
	capacity, err := unix.FcntlInt(uintptr(cp), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return 0, fmt.Errorf("fd %d (%s): F_GETPIPE_SZ: %w", fd, link, err)
	}
	f.Size = int64(capacity)
	if f.Flags&unix.O_ACCMODE == unix.O_RDONLY {
		data, err := peekPipe(cp, capacity)
		if err != nil {
			return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
		}
		f.GhostData = data
	}
	return t.add("", f), nil
}

// peekPipe copies the bytes queued in the pipe read end rd without consuming
// them.
func peekPipe(rd, capacity int) ([]byte, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("pipe: %w", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, capacity); err != nil {
		return nil, fmt.Errorf("F_SETPIPE_SZ %d: %w", capacity, err)
	}
	n, err := unix.Tee(rd, p[1], capacity, unix.SPLICE_F_NONBLOCK)
	if err == unix.EAGAIN {
		return nil, nil // empty
	}
	if err != nil {
		return nil, fmt.Errorf("tee queued pipe data: %w", err)
	}
	buf := make([]byte, n)
	got := 0
	for got < int(n) {
		m, err := unix.Read(p[0], buf[got:])
		if err != nil {
			return nil, fmt.Errorf("read queued pipe data: %w", err)
		}
		got += m
	}
	return buf, nil
}

// Check verifies, once every process of the dump is recorded, that each
// pipe has both ends inside the dump (fdTables: every dumped fd table):
// an end held outside would see a different pipe after restore.
func (t *Table) Check(fdTables map[int][]*imagepb.FdEntry) error {
	ends := map[uint64]uint32{}
	for _, f := range t.Files {
		if f.Kind == imagepb.FileKind_FILE_PIPE {
			ends[f.Ino] |= 1 << (f.Flags & unix.O_ACCMODE)
		}
	}
	byID := map[uint32]*imagepb.FileEntry{}
	for _, f := range t.Files {
		byID[f.Id] = f
	}
	var outside map[uint64]bool
	for pid, fds := range fdTables {
		for _, e := range fds {
			f := byID[e.FileId]
			if f == nil || f.Kind != imagepb.FileKind_FILE_PIPE || ends[f.Ino] == 1<<unix.O_RDONLY|1<<unix.O_WRONLY {
				continue
			}
			// One end is not in the dump: fine when nobody holds it any
			// more (closed, or its holder exited: restore closes it too);
			// refused when a process outside the dump holds it.
			if outside == nil {
				outside = pipesHeldOutside(fdTables)
			}
			if outside[f.Ino] {
				return &UnsupportedError{Pid: pid, Fd: int(e.Fd), Link: fmt.Sprintf("pipe:[%d]", f.Ino), Kind: "pipe with an end held outside the dump"}
			}
		}
	}
	return nil
}

// fifo records a named pipe opened by path. Its queued bytes belong to the
// pipe, not to an end: they are saved once per FIFO (on its first entry),
// through a reading copy so that a write-only end works too.
func (t *Table) fifo(f *imagepb.FileEntry, fd, cp int, link string) (uint32, error) {
	f.Kind = imagepb.FileKind_FILE_FIFO
	if strings.HasSuffix(link, " (deleted)") {
		return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "deleted fifo"}
	}
	key := fmt.Sprintf("fifo-data:%d:%d", f.Dev, f.Ino)
	if _, done := t.byKey[key]; !done {
		capacity, err := unix.FcntlInt(uintptr(cp), unix.F_GETPIPE_SZ, 0)
		if err != nil {
			return 0, fmt.Errorf("fd %d (%s): F_GETPIPE_SZ: %w", fd, link, err)
		}
		rd := cp
		if f.Flags&unix.O_ACCMODE == unix.O_WRONLY {
			// a FIFO opened O_RDWR never blocks and is the same pipe
			if rd, err = unix.Open(fmt.Sprintf("/proc/self/fd/%d", cp), unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err != nil {
				return 0, fmt.Errorf("fd %d (%s): reopen to read queued data: %w", fd, link, err)
			}
			defer unix.Close(rd)
		}
		data, err := peekPipe(rd, capacity)
		if err != nil {
			return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
		}
		f.Size = int64(capacity)
		f.GhostData = data
		t.byKey[key] = 0
	}
	return t.add("", f), nil
}

// pipesHeldOutside lists the pipes some process outside the dump has an fd
// of, by scanning /proc/*/fd of the host (or namespace).
func pipesHeldOutside(dumped map[int][]*imagepb.FdEntry) map[uint64]bool {
	out := map[uint64]bool{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		if _, ok := dumped[pid]; ok || pid == os.Getpid() {
			continue // the dump's processes, and our stolen copies
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err != nil || !strings.HasPrefix(l, "pipe:[") {
				continue
			}
			if ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(l, "pipe:["), "]"), 10, 64); err == nil {
				out[ino] = true
			}
		}
	}
	return out
}

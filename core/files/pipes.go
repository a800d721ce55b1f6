package files

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// pipeOrFifo records an fd of a FIFO (by its path) or a pipe; another
// kind of FIFO file is refused.
func (t *Table) pipeOrFifo(f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
	fd, cp, link := d.fd, d.cp, d.link
	if strings.HasPrefix(link, "/") {
		return t.fifo(f, fd, cp, link)
	}
	if !strings.HasPrefix(link, "pipe:") {
		return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "fifo"}
	}
	return t.pipe(f, fd, cp, link)
}

// pipe records one open file description of a pipe: its flags (access
// mode, O_NONBLOCK, O_APPEND, O_DIRECT, and O_LARGEFILE, which only the
// descriptions opened through /proc/PID/fd have) and the pipe's capacity.
// The queued bytes belong to the pipe, not to a description: they are
// saved once per pipe (on its first entry), copied with tee(2), which
// leaves them in the pipe.
func (t *Table) pipe(f *imagepb.FileEntry, fd, cp int, link string) (uint32, error) {
	f.Kind = imagepb.FileKind_FILE_PIPE
	capacity, err := unix.FcntlInt(uintptr(cp), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return 0, fmt.Errorf("fd %d (%s): F_GETPIPE_SZ: %w", fd, link, err)
	}
	f.Size = int64(capacity)
	if err := checkPipeFlags(f.Flags, fd, link); err != nil {
		return 0, err
	}
	key := fmt.Sprintf("pipe-data:%d", f.Ino)
	if _, done := t.byKey[key]; !done {
		if err := savePipeData(f, cp, capacity); err != nil {
			return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
		}
		t.byKey[key] = 0
	}
	return t.add("", f), nil
}

// savePipeData copies the bytes queued in the pipe of our fd cp (any end)
// into f, with the packet boundaries when the pipe holds packets.
func savePipeData(f *imagepb.FileEntry, cp, capacity int) error {
	rd := cp
	if f.Flags&unix.O_ACCMODE == unix.O_WRONLY {
		// a read description of the same pipe, opened non-blocking so
		// that it never waits for a writer
		var err error
		if rd, err = unix.Open(fmt.Sprintf("/proc/self/fd/%d", cp), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err != nil {
			return fmt.Errorf("reopen to read queued data: %w", err)
		}
		defer unix.Close(rd)
	}
	data, chunks, err := peekPipe(rd, capacity)
	if err != nil {
		return err
	}
	f.GhostData = data
	if len(chunks) > 1 || (len(data) > 0 && f.Flags&unix.O_DIRECT != 0) {
		f.PipePackets = chunks
	}
	return nil
}

// peekPipe copies the bytes queued in the pipe read end rd without
// consuming them. chunks are the lengths of the reads that return them:
// one read returns all the bytes of plain buffers, and ends after a packet
// buffer (a write to a pipe in packet mode), so in a packet pipe each chunk
// is one packet.
func peekPipe(rd, capacity int) (data []byte, chunks []uint32, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, nil, fmt.Errorf("pipe: %w", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, capacity); err != nil {
		return nil, nil, fmt.Errorf("F_SETPIPE_SZ %d: %w", capacity, err)
	}
	n, err := unix.Tee(rd, p[1], capacity, unix.SPLICE_F_NONBLOCK)
	if err == unix.EAGAIN {
		return nil, nil, nil // empty
	}
	if err != nil {
		return nil, nil, fmt.Errorf("tee queued pipe data: %w", err)
	}
	buf := make([]byte, n)
	got := 0
	for got < int(n) {
		m, err := unix.Read(p[0], buf[got:])
		if err != nil {
			return nil, nil, fmt.Errorf("read queued pipe data: %w", err)
		}
		if m == 0 {
			return nil, nil, fmt.Errorf("read queued pipe data: %d of %d bytes", got, n)
		}
		chunks = append(chunks, uint32(m))
		got += m
	}
	return buf, chunks, nil
}

// checkPackets verifies that the queued data of a pipe used in packet mode
// (some description of it has O_DIRECT, or it holds several packets) is a
// row of packets: a packet is never larger than a page, so a longer chunk
// means plain bytes mixed with packets, which cannot be written back
// exactly. The data of a packet pipe read in one chunk is one packet.
func (t *Table) checkPackets(fdTables map[int][]*imagepb.FdEntry) error {
	direct := map[[2]uint64]bool{}
	for _, f := range t.Files {
		if (f.Kind == imagepb.FileKind_FILE_PIPE || f.Kind == imagepb.FileKind_FILE_FIFO) && f.Flags&unix.O_DIRECT != 0 {
			direct[[2]uint64{f.Dev, f.Ino}] = true
		}
	}
	page := uint32(unix.Getpagesize())
	for _, f := range t.Files {
		if (f.Kind != imagepb.FileKind_FILE_PIPE && f.Kind != imagepb.FileKind_FILE_FIFO) || len(f.GhostData) == 0 {
			continue
		}
		if len(f.PipePackets) == 0 && direct[[2]uint64{f.Dev, f.Ino}] {
			f.PipePackets = []uint32{uint32(len(f.GhostData))}
		}
		for _, n := range f.PipePackets {
			if n > page {
				pid, fd := holderOf(fdTables, f.Id)
				return &UnsupportedError{Pid: pid, Fd: fd, Link: fmt.Sprintf("pipe:[%d]", f.Ino), Kind: "packet-mode pipe (O_DIRECT) with plain bytes queued among its packets"}
			}
		}
	}
	return nil
}

// Check runs, once every process of the dump is recorded: the queued data
// of packet pipes must be whole packets (checkPackets), and a pipe that has
// only some of its ends in the dump while a process outside the dump holds
// another (a daemon's stdout going to a logger, prog | tee) is marked
// external: its entries get pipe_external, and restore takes the pipe from
// the caller (--inherit-fd fd[N]:pipe:[INO]). An end nobody holds any more
// (closed, or its holder exited) is closed after restore too.
func (t *Table) Check(fdTables map[int][]*imagepb.FdEntry) error {
	if err := t.checkPackets(fdTables); err != nil {
		return err
	}
	ends := map[uint64]uint32{}
	for _, f := range t.Files {
		if f.Kind == imagepb.FileKind_FILE_PIPE {
			ends[f.Ino] |= 1 << (f.Flags & unix.O_ACCMODE)
		}
	}
	var outside map[uint64]bool
	for _, f := range t.Files {
		if f.Kind != imagepb.FileKind_FILE_PIPE || ends[f.Ino]&(1<<unix.O_RDWR) != 0 || ends[f.Ino] == 1<<unix.O_RDONLY|1<<unix.O_WRONLY {
			continue
		}
		if outside == nil {
			outside = pipesHeldOutside(fdTables)
		}
		if !outside[f.Ino] {
			continue
		}
		if t.opts.NoExtPipes && !t.opts.ExtPipes[f.Ino] {
			pid, fd := holderOf(fdTables, f.Id)
			return &UnsupportedError{Pid: pid, Fd: fd, Link: InheritPipeKey(f.Ino), Kind: "pipe with an end held outside the dump"}
		}
		f.PipeExternal = true
	}
	return nil
}

// InheritPipeKey is the --inherit-fd key of an external pipe (CRIU's).
func InheritPipeKey(ino uint64) string { return fmt.Sprintf("pipe:[%d]", ino) }

// fifo records a named pipe opened by path. Its queued bytes belong to the
// pipe, not to an end: they are saved once per FIFO (on its first entry),
// through a reading copy so that a write-only end works too.
func (t *Table) fifo(f *imagepb.FileEntry, fd, cp int, link string) (uint32, error) {
	f.Kind = imagepb.FileKind_FILE_FIFO
	if strings.HasSuffix(link, " (deleted)") {
		// recreated unlinked at restore (recreateDeletedFifo); a FIFO
		// still linked under another name would be another pipe then
		var st unix.Stat_t
		if err := unix.Fstat(cp, &st); err != nil {
			return 0, fmt.Errorf("fd %d (%s): fstat: %w", fd, link, err)
		}
		if st.Nlink > 0 {
			return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "fifo unlinked from this name but linked under another"}
		}
		f.Deleted = true
		f.Path = strings.TrimSuffix(link, " (deleted)")
	}
	if f.Flags&unix.O_PATH != 0 {
		if f.Deleted {
			return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "O_PATH fd of a deleted fifo"}
		}
		return t.add("", f), nil // names the FIFO, does not open the pipe
	}
	if err := checkPipeFlags(f.Flags, fd, link); err != nil {
		return 0, err
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
		data, chunks, err := peekPipe(rd, capacity)
		if err != nil {
			return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
		}
		f.Size = int64(capacity)
		f.GhostData = data
		if len(chunks) > 1 {
			f.PipePackets = chunks
		}
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

// holderOf finds a process and fd of the dump that refer to file id (the
// lowest pid, for a stable message).
func holderOf(fdTables map[int][]*imagepb.FdEntry, id uint32) (pid, fd int) {
	for p, fds := range fdTables {
		for _, e := range fds {
			if e.FileId == id && (pid == 0 || p < pid) {
				pid, fd = p, int(e.Fd)
				break
			}
		}
	}
	return pid, fd
}

// checkPipeFlags refuses a pipe or FIFO description with open flags that
// restore cannot give back (O_SYNC, O_DSYNC and the like, which F_SETFL
// cannot set; O_ASYNC comes back with its owner, see fown.go).
func checkPipeFlags(flags uint32, fd int, link string) error {
	known := uint32(unix.O_ACCMODE|pipeSetFlags|unix.O_ASYNC) | oLargefile
	extra := flags &^ known
	if extra == 0 {
		return nil
	}
	var names []string
	for _, n := range []struct {
		bit  uint32
		name string
	}{{unix.O_SYNC &^ unix.O_DSYNC, "O_SYNC"}, {unix.O_DSYNC, "O_DSYNC"}} {
		if extra&n.bit != 0 {
			names = append(names, n.name)
			extra &^= n.bit
		}
	}
	if extra != 0 {
		names = append(names, fmt.Sprintf("%#o", extra))
	}
	return &UnsupportedError{Fd: fd, Link: link, Kind: "pipe with open flags " + strings.Join(names, "|")}
}

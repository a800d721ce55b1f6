package nsdump

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/linux"
	"github.com/ctr-cr/ctr-cr/internal/threadns"
)

// DumpIPC captures the IPC namespace of pid; see DumpIPCNS.
func DumpIPC(pid int) (*IPC, error) {
	st, err := dumpIPC(NSPath(pid, "ipc"))
	if err != nil {
		return nil, fmt.Errorf("dump ipc: pid %d: %w", pid, err)
	}
	return st, nil
}

// DumpIPCNS captures the IPC namespace file at path: its sysctls, every
// shared memory segment with its non-zero contents (attached read-only in
// this process for the copy, detached before returning), every semaphore
// set with its values and every message queue with its messages, read with
// msgrcv(MSG_COPY) so that the queues are left exactly as they were.
// Objects are listed with the *_STAT_ANY commands, so no permission bits
// get in the way. The namespace should be quiescent (its processes
// frozen): an object that changes during the dump may make it fail. The
// dump fails when the contents exceed MaxIPCData, a segment exceeds
// MaxShmSize or uses huge pages (SHM_HUGETLB), or a queued message is
// longer than the namespace's current msgmax (MSG_COPY cannot copy it).
func DumpIPCNS(path string) (*IPC, error) {
	st, err := dumpIPC(path)
	if err != nil {
		return nil, fmt.Errorf("dump ipc: %s: %w", path, err)
	}
	return st, nil
}

func dumpIPC(path string) (*IPC, error) {
	st := &IPC{}
	err := threadns.RunInPath(path, unix.CLONE_NEWIPC, func() error {
		var err error
		if st.Sysctls, err = readIPCSysctls(); err != nil {
			return err
		}
		budget := ipcDataLimit
		if st.Shm, err = dumpShm(&budget); err != nil {
			return err
		}
		if st.Sem, err = dumpSem(&budget); err != nil {
			return err
		}
		st.Msg, err = dumpMsg(&budget)
		return err
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

func permOf(id int, p *ipcPerm) IPCPerm {
	return IPCPerm{ID: id, Key: p.Key, UID: p.UID, GID: p.GID, CUID: p.CUID, CGID: p.CGID, Mode: p.Mode & permMask}
}

func dumpShm(budget *int64) ([]ShmSegment, error) {
	var info infoBuf
	maxIdx, err := shmCtl(0, shmInfo, unsafe.Pointer(&info))
	if err != nil {
		return nil, fmt.Errorf("shm: SHM_INFO: %w", err)
	}
	var out []ShmSegment
	for idx := 0; idx <= maxIdx; idx++ {
		var ds shmidDS
		id, err := shmCtl(idx, shmStatAny, unsafe.Pointer(&ds))
		if errors.Is(err, unix.EINVAL) {
			continue // free slot
		}
		if err != nil {
			return nil, fmt.Errorf("shm index %d: SHM_STAT_ANY: %w", idx, err)
		}
		s := ShmSegment{
			IPCPerm: permOf(id, &ds.Perm),
			Size:    ds.Segsz,
			Locked:  ds.Perm.Mode&shmLocked != 0,
			Removed: ds.Perm.Mode&shmDest != 0,
			Nattch:  ds.Nattch,
		}
		if s.Size > MaxShmSize {
			return nil, fmt.Errorf("shm %s: size %d above the %d limit", s.String(), s.Size, uint64(MaxShmSize))
		}
		if s.Chunks, err = readShm(id, s.Size, budget); err != nil {
			return nil, fmt.Errorf("shm %s: %w", s.String(), err)
		}
		out = append(out, s)
	}
	return out, nil
}

// readShm copies the non-zero pages of segment id. It attaches the segment
// read-only and finds its data ranges with SEEK_DATA/SEEK_HOLE on the
// segment's file (reopened through /proc/self/map_files), so holes are
// neither read nor allocated; without map_files the whole segment is read.
// Segments backed by huge pages (SHM_HUGETLB) are refused: IPC_STAT does
// not tell them apart and RestoreIPC would recreate them with normal pages.
func readShm(id int, size uint64, budget *int64) (chunks []ShmChunk, err error) {
	mem, err := linux.ShmAttach(id, shmRdonly)
	if err != nil {
		return nil, fmt.Errorf("shmat: %w", err)
	}
	defer func() {
		if derr := linux.ShmDetach(mem); derr != nil && err == nil {
			err = fmt.Errorf("shmdt: %w", derr)
		}
	}()
	if uint64(len(mem)) < size {
		return nil, fmt.Errorf("shmat: mapped %d bytes, want %d", len(mem), size)
	}
	mem = mem[:size]
	ranges := [][2]uint64{{0, size}}
	page := uint64(os.Getpagesize())
	start := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(mem))))
	mf := fmt.Sprintf("/proc/self/map_files/%x-%x", start, start+(size+page-1)/page*page)
	if fd, oerr := unix.Open(mf, unix.O_RDONLY|unix.O_CLOEXEC, 0); oerr == nil {
		var sfs unix.Statfs_t
		if err := unix.Fstatfs(fd, &sfs); err == nil && sfs.Type == unix.HUGETLBFS_MAGIC {
			unix.Close(fd)
			return nil, errors.New("SHM_HUGETLB segments are not supported")
		}
		ranges, err = dataRanges(fd, size)
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", mf, err)
		}
	}
	for _, r := range ranges {
		for off := r[0]; off < r[1]; off += page {
			end := min(off+page, r[1])
			p := mem[off:end]
			if isZero(p) {
				continue
			}
			if *budget -= int64(len(p)); *budget < 0 {
				return nil, fmt.Errorf("contents exceed the %d bytes limit of an IPC dump", ipcDataLimit)
			}
			if n := len(chunks); n > 0 && chunks[n-1].Offset+uint64(len(chunks[n-1].Data)) == off {
				chunks[n-1].Data = append(chunks[n-1].Data, p...)
			} else {
				chunks = append(chunks, ShmChunk{Offset: off, Data: append([]byte(nil), p...)})
			}
		}
	}
	return chunks, nil
}

// dataRanges lists the [start, end) ranges of fd below size that hold data.
func dataRanges(fd int, size uint64) ([][2]uint64, error) {
	var out [][2]uint64
	off := int64(0)
	for uint64(off) < size {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("SEEK_DATA %d: %w", off, err)
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE %d: %w", d, err)
		}
		if uint64(d) >= size {
			break
		}
		out = append(out, [2]uint64{uint64(d), min(uint64(h), size)})
		off = h
	}
	return out, nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if *(*uint64)(unsafe.Pointer(&b[0])) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func dumpSem(budget *int64) ([]SemSet, error) {
	var info infoBuf
	maxIdx, err := semCtl(0, 0, semInfo, unsafe.Pointer(&info))
	if err != nil {
		return nil, fmt.Errorf("sem: SEM_INFO: %w", err)
	}
	var out []SemSet
	for idx := 0; idx <= maxIdx; idx++ {
		var ds semidDS
		id, err := semCtl(idx, 0, semStatAny, unsafe.Pointer(&ds))
		if errors.Is(err, unix.EINVAL) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sem index %d: SEM_STAT_ANY: %w", idx, err)
		}
		s := SemSet{IPCPerm: permOf(id, &ds.Perm)}
		if ds.Nsems == 0 || ds.Nsems > MaxSemsPerSet {
			return nil, fmt.Errorf("sem %s: %d semaphores (limit %d)", s.String(), ds.Nsems, MaxSemsPerSet)
		}
		if *budget -= 2 * int64(ds.Nsems); *budget < 0 {
			return nil, fmt.Errorf("sem %s: contents exceed the %d bytes limit of an IPC dump", s.String(), ipcDataLimit)
		}
		s.Values = make([]uint16, ds.Nsems)
		if _, err := semCtl(id, 0, semGetall, unsafe.Pointer(&s.Values[0])); err != nil {
			return nil, fmt.Errorf("sem %s: GETALL: %w", s.String(), err)
		}
		out = append(out, s)
	}
	return out, nil
}

func dumpMsg(budget *int64) ([]MsgQueue, error) {
	var info infoBuf
	maxIdx, err := msgCtl(0, msgInfo, unsafe.Pointer(&info))
	if err != nil {
		return nil, fmt.Errorf("msg: MSG_INFO: %w", err)
	}
	var out []MsgQueue
	for idx := 0; idx <= maxIdx; idx++ {
		var ds msqidDS
		id, err := msgCtl(idx, msgStatAny, unsafe.Pointer(&ds))
		if errors.Is(err, unix.EINVAL) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("msg index %d: MSG_STAT_ANY: %w", idx, err)
		}
		q := MsgQueue{IPCPerm: permOf(id, &ds.Perm), Qbytes: ds.Qbytes}
		if ds.Cbytes > uint64(ipcDataLimit) || ds.Qnum > uint64(ipcDataLimit) ||
			int64(ds.Cbytes+MsgOverhead*ds.Qnum) > *budget {
			return nil, fmt.Errorf("msg %s: %d messages, %d bytes: contents exceed the %d bytes limit of an IPC dump", q.String(), ds.Qnum, ds.Cbytes, ipcDataLimit)
		}
		*budget -= int64(ds.Cbytes + MsgOverhead*ds.Qnum)
		if q.Messages, err = readQueue(id, ds.Qnum, ds.Cbytes); err != nil {
			return nil, fmt.Errorf("msg %s: %w", q.String(), err)
		}
		out = append(out, q)
	}
	return out, nil
}

// readQueue copies the qnum messages (cbytes bytes in all) of queue id
// without dequeuing them (MSG_COPY with the message index as type).
func readQueue(id int, qnum, cbytes uint64) ([]Msg, error) {
	buf := make([]byte, 8+cbytes)
	msgs := make([]Msg, 0, qnum)
	var total uint64
	for i := uint64(0); i < qnum; i++ {
		n, err := msgRcv(id, buf, int64(i), msgCopy|ipcNowait)
		switch {
		case errors.Is(err, unix.ENOSYS):
			return nil, fmt.Errorf("message %d: msgrcv(MSG_COPY): %w (kernel without CONFIG_CHECKPOINT_RESTORE)", i, err)
		case errors.Is(err, unix.E2BIG):
			return nil, fmt.Errorf("message %d: msgrcv(MSG_COPY): %w (message longer than kernel.msgmax)", i, err)
		case errors.Is(err, unix.ENOMSG):
			return nil, fmt.Errorf("message %d: gone (queue changed during the dump)", i)
		case err != nil:
			return nil, fmt.Errorf("message %d: msgrcv(MSG_COPY): %w", i, err)
		}
		typ := *(*int64)(unsafe.Pointer(&buf[0]))
		msgs = append(msgs, Msg{Type: typ, Data: append([]byte{}, buf[8:8+n]...)})
		total += uint64(n)
	}
	if total != cbytes {
		return nil, fmt.Errorf("messages hold %d bytes, queue says %d (queue changed during the dump)", total, cbytes)
	}
	return msgs, nil
}

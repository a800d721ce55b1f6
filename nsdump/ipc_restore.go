package nsdump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/linux"
	"github.com/ctr-cr/ctr-cr/internal/threadns"
)

// RestoreIPC validates st and recreates it in the IPC namespace file at
// path, which should be fresh (no objects). Every object gets its dumped
// id (kernel/{shm,sem,msg}_next_id is written right before each create and
// the id obtained is checked), key, owner, permission bits and creator
// (created with the creator's ids as the thread's effective ids); then
// shm contents (and SHM_LOCK), semaphore values (SETALL), messages in
// order with their types, and queue qbytes. The sysctl limits are raised
// as needed while the objects are created, then set to the dumped values,
// except kernel.shm_rmid_forced, which stays 0 until FinishIPC: with it 1,
// the kernel would destroy every segment nobody has attached yet.
//
// A taken id or key fails with an error naming the object. On failure the
// objects this call created are removed again (the sysctls are not put
// back: the namespace is meant to be discarded). The *_next_id files are
// -1 on return. Nothing else may create IPC objects in the namespace
// meanwhile (a concurrent create would consume a next_id meant for us;
// the id check then fails the restore rather than misnumbering).
func RestoreIPC(path string, st *IPC) error {
	if err := st.Validate(); err != nil {
		return fmt.Errorf("restore ipc: %w", err)
	}
	err := threadns.RunInPath(path, unix.CLONE_NEWIPC, func() error {
		r := &ipcRestorer{st: st}
		err := r.run()
		if err != nil {
			r.undo()
		}
		resetNextIDs()
		return err
	})
	if err != nil {
		return fmt.Errorf("restore ipc: %s: %w", path, err)
	}
	return nil
}

// FinishIPC completes RestoreIPC once the restored processes have attached
// their segments again: it removes (IPC_RMID) the segments dumped as
// Removed (one already gone is not an error), then writes the dumped
// kernel.shm_rmid_forced. When that is 1 the kernel destroys at once every
// segment left unattached (their creators are unknown to it after a
// restore), as it would for orphaned segments.
func FinishIPC(path string, st *IPC) error {
	if err := st.Validate(); err != nil {
		return fmt.Errorf("finish ipc: %w", err)
	}
	err := threadns.RunInPath(path, unix.CLONE_NEWIPC, func() error {
		for i := range st.Shm {
			s := &st.Shm[i]
			if !s.Removed {
				continue
			}
			if _, err := shmCtl(s.ID, ipcRmid, nil); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
				return fmt.Errorf("shm %s: IPC_RMID: %w", s.String(), err)
			}
		}
		return writeSysctl("kernel/shm_rmid_forced", strconv.FormatInt(st.Sysctls.ShmRmidForced, 10))
	})
	if err != nil {
		return fmt.Errorf("finish ipc: %s: %w", path, err)
	}
	return nil
}

type createdObj struct {
	kind string
	id   int
}

type ipcRestorer struct {
	st      *IPC
	created []createdObj
}

func (r *ipcRestorer) run() error {
	cur, err := readIPCSysctls()
	if err != nil {
		return err
	}
	if (r.st.Sysctls.Mqueue == nil) != (cur.Mqueue == nil) {
		return errors.New("sysctls: fs/mqueue present in only one of image and kernel")
	}
	need := r.needed()
	tmp := raiseLimits(&cur, &r.st.Sysctls, &need)
	if err := writeIPCSysctls(&tmp); err != nil {
		return fmt.Errorf("raising limits: %w", err)
	}
	for i := range r.st.Shm {
		if err := r.shm(&r.st.Shm[i]); err != nil {
			return fmt.Errorf("shm %s: %w", r.st.Shm[i].String(), err)
		}
	}
	for i := range r.st.Sem {
		if err := r.sem(&r.st.Sem[i]); err != nil {
			return fmt.Errorf("sem %s: %w", r.st.Sem[i].String(), err)
		}
	}
	for i := range r.st.Msg {
		if err := r.msg(&r.st.Msg[i]); err != nil {
			return fmt.Errorf("msg %s: %w", r.st.Msg[i].String(), err)
		}
	}
	final := r.st.Sysctls
	final.ShmRmidForced = 0 // FinishIPC
	return writeIPCSysctls(&final)
}

// needed returns the smallest limits under which the objects fit.
func (r *ipcRestorer) needed() IPCSysctls {
	var n IPCSysctls
	page := uint64(os.Getpagesize())
	for _, s := range r.st.Shm {
		n.ShmMax = max(n.ShmMax, s.Size)
		n.ShmAll += (s.Size + page - 1) / page
	}
	n.ShmMni = int64(len(r.st.Shm))
	for _, s := range r.st.Sem {
		n.Sem[0] = max(n.Sem[0], int64(len(s.Values)))
		n.Sem[1] += int64(len(s.Values))
	}
	n.Sem[3] = int64(len(r.st.Sem))
	for _, q := range r.st.Msg {
		var tot int64
		for _, m := range q.Messages {
			n.MsgMax = max(n.MsgMax, int64(len(m.Data)))
			tot += int64(len(m.Data))
		}
		n.MsgMnb = max(n.MsgMnb, tot, int64(q.Qbytes))
	}
	n.MsgMni = int64(len(r.st.Msg))
	return n
}

// undo removes the objects created so far.
func (r *ipcRestorer) undo() {
	for _, o := range r.created {
		switch o.kind {
		case "shm":
			shmCtl(o.id, ipcRmid, nil)
		case "sem":
			semCtl(o.id, 0, ipcRmid, nil)
		case "msg":
			msgCtl(o.id, ipcRmid, nil)
		}
	}
	r.created = nil
}

func resetNextIDs() {
	for _, k := range []string{"shm", "sem", "msg"} {
		writeSysctl("kernel/"+k+"_next_id", "-1")
	}
}

// create makes one object of kind with id p.ID: it writes kind_next_id,
// calls get as the creator's effective ids and checks the id obtained.
func (r *ipcRestorer) create(kind string, p *IPCPerm, get func() (int, error), rmid func(int)) error {
	nextID := "kernel/" + kind + "_next_id"
	if err := writeSysctl(nextID, strconv.Itoa(p.ID)); err != nil {
		return err
	}
	id, err := asCreator(p, get)
	if err != nil {
		writeSysctl(nextID, "-1")
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%sget: key taken: %w", kind, err)
		}
		return fmt.Errorf("%sget: %w", kind, err)
	}
	if id != p.ID {
		rmid(id)
		return fmt.Errorf("%sget: got id %d: id %d is taken", kind, id, p.ID)
	}
	r.created = append(r.created, createdObj{kind, id})
	return nil
}

// asCreator runs get with the thread's effective uid and gid switched to
// p's creator ids (only this thread: raw setresuid/setresgid; the thread
// is discarded after threadns.RunIn anyway) and switches back.
func asCreator(p *IPCPerm, get func() (int, error)) (int, error) {
	euid, egid := unix.Geteuid(), unix.Getegid()
	if uint32(euid) == p.CUID && uint32(egid) == p.CGID {
		return get()
	}
	const keep = ^uintptr(0)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(p.CGID), keep); e != 0 {
		return 0, fmt.Errorf("setresgid(-1, %d, -1): %w", p.CGID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(p.CUID), keep); e != 0 {
		unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(egid), keep)
		return 0, fmt.Errorf("setresuid(-1, %d, -1): %w", p.CUID, e)
	}
	id, err := get()
	// A thread that cannot switch back is discarded with threadns.RunIn; the
	// error stops the restore (and its undo may then fail to remove
	// objects: the namespace is to be discarded anyway).
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(euid), keep); e != 0 {
		return 0, fmt.Errorf("setresuid back to %d: %w", euid, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(egid), keep); e != 0 {
		return 0, fmt.Errorf("setresgid back to %d: %w", egid, e)
	}
	return id, err
}

func setPerm(dst *ipcPerm, p *IPCPerm) {
	dst.UID, dst.GID, dst.Mode = p.UID, p.GID, p.Mode
}

func (r *ipcRestorer) shm(s *ShmSegment) error {
	flag := ipcCreat | ipcExcl | int(s.Mode)
	err := r.create("shm", &s.IPCPerm, func() (int, error) { return shmGet(s.Key, s.Size, flag) },
		func(id int) { shmCtl(id, ipcRmid, nil) })
	if err != nil {
		return err
	}
	if len(s.Chunks) > 0 {
		if err := writeShm(s); err != nil {
			return err
		}
	}
	if s.Locked {
		if _, err := shmCtl(s.ID, shmLock, nil); err != nil {
			return fmt.Errorf("SHM_LOCK: %w", err)
		}
	}
	var ds shmidDS
	if _, err := shmCtl(s.ID, ipcStat, unsafe.Pointer(&ds)); err != nil {
		return fmt.Errorf("IPC_STAT: %w", err)
	}
	setPerm(&ds.Perm, &s.IPCPerm)
	if _, err := shmCtl(s.ID, ipcSet, unsafe.Pointer(&ds)); err != nil {
		return fmt.Errorf("IPC_SET: %w", err)
	}
	return nil
}

func writeShm(s *ShmSegment) (err error) {
	mem, err := linux.ShmAttach(s.ID, 0)
	if err != nil {
		return fmt.Errorf("shmat: %w", err)
	}
	defer func() {
		if derr := linux.ShmDetach(mem); derr != nil && err == nil {
			err = fmt.Errorf("shmdt: %w", derr)
		}
	}()
	if uint64(len(mem)) < s.Size {
		return fmt.Errorf("shmat: mapped %d bytes, want %d", len(mem), s.Size)
	}
	for _, c := range s.Chunks {
		copy(mem[c.Offset:], c.Data)
	}
	return nil
}

func (r *ipcRestorer) sem(s *SemSet) error {
	flag := ipcCreat | ipcExcl | int(s.Mode)
	err := r.create("sem", &s.IPCPerm, func() (int, error) { return semGet(s.Key, len(s.Values), flag) },
		func(id int) { semCtl(id, 0, ipcRmid, nil) })
	if err != nil {
		return err
	}
	vals := append([]uint16(nil), s.Values...)
	if _, err := semCtl(s.ID, 0, semSetall, unsafe.Pointer(&vals[0])); err != nil {
		return fmt.Errorf("SETALL: %w", err)
	}
	var ds semidDS
	if _, err := semCtl(s.ID, 0, ipcStat, unsafe.Pointer(&ds)); err != nil {
		return fmt.Errorf("IPC_STAT: %w", err)
	}
	setPerm(&ds.Perm, &s.IPCPerm)
	if _, err := semCtl(s.ID, 0, ipcSet, unsafe.Pointer(&ds)); err != nil {
		return fmt.Errorf("IPC_SET: %w", err)
	}
	return nil
}

func (r *ipcRestorer) msg(q *MsgQueue) error {
	flag := ipcCreat | ipcExcl | int(q.Mode)
	err := r.create("msg", &q.IPCPerm, func() (int, error) { return msgGet(q.Key, flag) },
		func(id int) { msgCtl(id, ipcRmid, nil) })
	if err != nil {
		return err
	}
	var ds msqidDS
	if _, err := msgCtl(q.ID, ipcStat, unsafe.Pointer(&ds)); err != nil {
		return fmt.Errorf("IPC_STAT: %w", err)
	}
	// Room for every message while sending (qbytes may have been lowered
	// below what is queued), the dumped qbytes afterwards.
	var tot uint64
	for _, m := range q.Messages {
		tot += uint64(len(m.Data))
	}
	ds.Qbytes = max(q.Qbytes, tot)
	if _, err := msgCtl(q.ID, ipcSet, unsafe.Pointer(&ds)); err != nil {
		return fmt.Errorf("IPC_SET qbytes %d: %w", ds.Qbytes, err)
	}
	var buf []byte
	for n, m := range q.Messages {
		buf = append(buf[:0], make([]byte, 8)...)
		binary.NativeEndian.PutUint64(buf, uint64(m.Type))
		buf = append(buf, m.Data...)
		if err := msgSnd(q.ID, buf, ipcNowait); err != nil {
			return fmt.Errorf("message %d (type %d, %d bytes): msgsnd: %w", n, m.Type, len(m.Data), err)
		}
	}
	ds.Qbytes = q.Qbytes
	setPerm(&ds.Perm, &q.IPCPerm)
	if _, err := msgCtl(q.ID, ipcSet, unsafe.Pointer(&ds)); err != nil {
		return fmt.Errorf("IPC_SET: %w", err)
	}
	return nil
}

package nsdump

import (
	"errors"
	"fmt"
	"math"
)

// Limits enforced at dump and by Validate.
const (
	// MaxIPCData caps the bytes of content an IPC namespace dump may hold:
	// the non-zero pages of all shared memory segments, plus the text of
	// every queued message and MsgOverhead bytes per message, plus 2 bytes
	// per semaphore. A dump above it fails with a clear error (the content
	// is held in memory).
	MaxIPCData = 256 << 20
	// MsgOverhead is what one queued message counts toward MaxIPCData
	// besides its text (so that millions of empty messages are bounded too).
	MsgOverhead = 64
	// MaxShmSize caps the size of one shared memory segment (its
	// address-space size; holes cost nothing in the image).
	MaxShmSize = 1 << 40
	// MaxSemsPerSet caps the number of semaphores in one set.
	MaxSemsPerSet = 1 << 16
	// maxIPCIndex is IPCMNI with ipcmni_extend (the most objects of one
	// kind a namespace can hold).
	maxIPCIndex = 1 << 24
)

// ipcDataLimit is MaxIPCData; tests lower it.
var ipcDataLimit int64 = MaxIPCData

// IPC is the state of an IPC namespace: its SysV objects and sysctls.
// POSIX message queues (the mqueue filesystem) are not objects of this
// struct; only their per-namespace limits are (Sysctls.Mqueue).
type IPC struct {
	Sysctls IPCSysctls   `json:"sysctls"`
	Shm     []ShmSegment `json:"shm,omitempty"`
	Sem     []SemSet     `json:"sem,omitempty"`
	Msg     []MsgQueue   `json:"msg,omitempty"`
}

// IPCPerm is what every SysV object has: id, key, owner, creator and
// permission bits.
type IPCPerm struct {
	ID  int    `json:"id"`
	Key int32  `json:"key"` // 0 is IPC_PRIVATE
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
	// CUID and CGID are the creator's; restore creates the object with
	// these as the thread's effective ids.
	CUID uint32 `json:"cuid"`
	CGID uint32 `json:"cgid"`
	Mode uint32 `json:"mode"` // permission bits only (0777)
}

// ShmSegment is one SysV shared memory segment. Chunks hold its non-zero
// contents; everything outside them is zero.
type ShmSegment struct {
	IPCPerm
	Size uint64 `json:"size"`
	// Locked: SHM_LOCK was applied (restored with SHM_LOCK).
	Locked bool `json:"locked,omitempty"`
	// Removed: IPC_RMID was called while the segment was attached
	// (SHM_DEST). RestoreIPC recreates it present; FinishIPC removes it
	// once the restored processes have attached it again.
	Removed bool `json:"removed,omitempty"`
	// Nattch is the number of attachments at dump (informational).
	Nattch uint64     `json:"nattch"`
	Chunks []ShmChunk `json:"chunks,omitempty"`
}

// ShmChunk is a run of segment contents starting at Offset.
type ShmChunk struct {
	Offset uint64 `json:"offset"`
	Data   []byte `json:"data"`
}

// SemSet is one SysV semaphore set; the set has len(Values) semaphores.
// Semaphore pids, wait counts and undo lists are not part of it.
type SemSet struct {
	IPCPerm
	Values []uint16 `json:"values"`
}

// MsgQueue is one SysV message queue with its messages in queue order.
type MsgQueue struct {
	IPCPerm
	Qbytes   uint64 `json:"qbytes"`
	Messages []Msg  `json:"messages,omitempty"`
}

// Msg is one queued message.
type Msg struct {
	Type int64  `json:"type"`
	Data []byte `json:"data"`
}

// IPCSysctls are the sysctls that belong to an IPC namespace
// (/proc/sys/kernel/{shm*,msg*,sem} and /proc/sys/fs/mqueue/*). The
// *_next_id files are restore tools, not state, and auto_msgmni is
// obsolete (always 0).
type IPCSysctls struct {
	ShmMax        uint64 `json:"shmmax"`
	ShmAll        uint64 `json:"shmall"`
	ShmMni        int64  `json:"shmmni"`
	ShmRmidForced int64  `json:"shm_rmid_forced"`
	MsgMax        int64  `json:"msgmax"`
	MsgMnb        int64  `json:"msgmnb"`
	MsgMni        int64  `json:"msgmni"`
	// Sem is kernel.sem: semmsl, semmns, semopm, semmni.
	Sem [4]int64 `json:"sem"`
	// Mqueue is nil when the kernel has no POSIX message queues.
	Mqueue *MqueueSysctls `json:"mqueue,omitempty"`
}

// MqueueSysctls are /proc/sys/fs/mqueue/*.
type MqueueSysctls struct {
	QueuesMax      int64 `json:"queues_max"`
	MsgMax         int64 `json:"msg_max"`
	MsgsizeMax     int64 `json:"msgsize_max"`
	MsgDefault     int64 `json:"msg_default"`
	MsgsizeDefault int64 `json:"msgsize_default"`
}

func (p *IPCPerm) String() string { return fmt.Sprintf("id %d key %#x", p.ID, uint32(p.Key)) }

func (p *IPCPerm) validate() error {
	if p.ID < 0 || p.ID > math.MaxInt32 {
		return errors.New("bad id")
	}
	if p.Mode&^permMask != 0 {
		return fmt.Errorf("mode %#o has bits beyond 0777", p.Mode)
	}
	for _, v := range []uint32{p.UID, p.GID, p.CUID, p.CGID} {
		if v == math.MaxUint32 {
			return errors.New("uid/gid -1")
		}
	}
	return nil
}

// Validate checks state read back from an image before it is restored:
// ids and keys unique per kind, permission bits only, sizes and counts
// within the kernel's and this package's limits (MaxIPCData, MaxShmSize,
// MaxSemsPerSet), shm chunks sorted, disjoint and inside their segment,
// semaphore values at most 32767, message types positive, sysctls within
// the kernel's ranges.
func (st *IPC) Validate() error {
	if st == nil {
		return errors.New("ipc: missing")
	}
	if err := st.Sysctls.validate(); err != nil {
		return fmt.Errorf("ipc: sysctls: %w", err)
	}
	var total uint64
	addData := func(n uint64) error {
		total += n
		if total > uint64(ipcDataLimit) {
			return fmt.Errorf("contents exceed %d bytes", ipcDataLimit)
		}
		return nil
	}
	if len(st.Shm) > maxIPCIndex || len(st.Sem) > maxIPCIndex || len(st.Msg) > maxIPCIndex {
		return errors.New("ipc: too many objects")
	}

	kc := newKindCheck()
	for i := range st.Shm {
		s := &st.Shm[i]
		if err := s.validate(kc, addData); err != nil {
			return fmt.Errorf("ipc: shm %s: %w", s.String(), err)
		}
	}
	kc = newKindCheck()
	for i := range st.Sem {
		s := &st.Sem[i]
		err := kc.add(&s.IPCPerm)
		if err == nil && (len(s.Values) == 0 || len(s.Values) > MaxSemsPerSet) {
			err = fmt.Errorf("%d semaphores (want 1..%d)", len(s.Values), MaxSemsPerSet)
		}
		if err == nil {
			err = addData(2 * uint64(len(s.Values)))
		}
		if err == nil {
			for n, v := range s.Values {
				if v > semvmx {
					err = fmt.Errorf("semaphore %d: value %d above %d", n, v, semvmx)
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("ipc: sem %s: %w", s.String(), err)
		}
	}
	kc = newKindCheck()
	for i := range st.Msg {
		q := &st.Msg[i]
		err := kc.add(&q.IPCPerm)
		if err == nil && q.Qbytes > math.MaxInt32 {
			err = fmt.Errorf("qbytes %d above %d", q.Qbytes, math.MaxInt32)
		}
		for n := 0; err == nil && n < len(q.Messages); n++ {
			m := &q.Messages[n]
			if m.Type < 1 {
				err = fmt.Errorf("message %d: type %d (want >= 1)", n, m.Type)
			} else if e := addData(MsgOverhead + uint64(len(m.Data))); e != nil {
				err = fmt.Errorf("message %d: %w", n, e)
			}
		}
		if err != nil {
			return fmt.Errorf("ipc: msg %s: %w", q.String(), err)
		}
	}
	return nil
}

func (s *ShmSegment) validate(kc *kindCheck, addData func(uint64) error) error {
	if err := kc.add(&s.IPCPerm); err != nil {
		return err
	}
	if s.Size == 0 || s.Size > MaxShmSize {
		return fmt.Errorf("size %d (want 1..%d)", s.Size, uint64(MaxShmSize))
	}
	var next uint64
	for n, c := range s.Chunks {
		if len(c.Data) == 0 {
			return fmt.Errorf("chunk %d at %#x: empty", n, c.Offset)
		}
		if c.Offset < next {
			return fmt.Errorf("chunk %d at %#x: overlaps or out of order", n, c.Offset)
		}
		end := c.Offset + uint64(len(c.Data))
		if end < c.Offset || end > s.Size {
			return fmt.Errorf("chunk %d at %#x+%d: beyond size %d", n, c.Offset, len(c.Data), s.Size)
		}
		if err := addData(uint64(len(c.Data))); err != nil {
			return err
		}
		next = end
	}
	return nil
}

// kindCheck finds duplicate ids and keys among the objects of one kind.
type kindCheck struct {
	ids  map[int]bool
	keys map[int32]bool
}

func newKindCheck() *kindCheck { return &kindCheck{ids: map[int]bool{}, keys: map[int32]bool{}} }

func (kc *kindCheck) add(p *IPCPerm) error {
	if err := p.validate(); err != nil {
		return err
	}
	if kc.ids[p.ID] {
		return errors.New("duplicate id")
	}
	kc.ids[p.ID] = true
	if p.Key != ipcPrivate {
		if kc.keys[p.Key] {
			return errors.New("duplicate key")
		}
		kc.keys[p.Key] = true
	}
	return nil
}

func (sc *IPCSysctls) validate() error {
	type r struct {
		name     string
		v        int64
		min, max int64
	}
	rs := []r{
		{"shmmni", sc.ShmMni, 0, maxIPCIndex},
		{"shm_rmid_forced", sc.ShmRmidForced, 0, 1},
		{"msgmax", sc.MsgMax, 0, math.MaxInt32},
		{"msgmnb", sc.MsgMnb, 0, math.MaxInt32},
		{"msgmni", sc.MsgMni, 0, maxIPCIndex},
		{"sem semmsl", sc.Sem[0], 0, math.MaxInt32},
		{"sem semmns", sc.Sem[1], 0, math.MaxInt32},
		{"sem semopm", sc.Sem[2], 0, math.MaxInt32},
		{"sem semmni", sc.Sem[3], 0, maxIPCIndex},
	}
	if m := sc.Mqueue; m != nil {
		rs = append(rs,
			r{"mqueue queues_max", m.QueuesMax, 0, math.MaxInt32},
			r{"mqueue msg_max", m.MsgMax, 1, 65536},
			r{"mqueue msgsize_max", m.MsgsizeMax, 128, 16 << 20},
			r{"mqueue msg_default", m.MsgDefault, 1, 65536},
			r{"mqueue msgsize_default", m.MsgsizeDefault, 128, 16 << 20},
		)
	}
	for _, x := range rs {
		if x.v < x.min || x.v > x.max {
			return fmt.Errorf("%s %d out of range [%d, %d]", x.name, x.v, x.min, x.max)
		}
	}
	return nil
}

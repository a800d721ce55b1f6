package nsdump

// Typed wrappers for the SysV IPC system calls (x86_64 / 64-bit layouts,
// IPC_64 implied). Every wrapper retries on EINTR (internal/linux). They act in the IPC
// namespace of the calling thread.

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/linux"
)

// Commands and flags from include/uapi/linux/{ipc,shm,sem,msg}.h.
const (
	ipcPrivate = 0

	ipcCreat  = 0o1000
	ipcExcl   = 0o2000
	ipcNowait = 0o4000

	ipcRmid = 0
	ipcSet  = 1
	ipcStat = 2

	shmLock    = 11
	shmInfo    = 14
	shmStatAny = 15
	shmRdonly  = 0o10000
	shmDest    = 0o1000 // mode bit: marked for removal (IPC_RMID while attached)
	shmLocked  = 0o2000 // mode bit: SHM_LOCK'ed

	semGetall  = 13
	semSetall  = 17
	semInfo    = 19
	semStatAny = 20
	semvmx     = 32767 // largest semaphore value (SEMVMX)

	msgInfo    = 12
	msgStatAny = 13
	msgCopy    = 0o40000

	permMask = 0o777
)

// ipcPerm is struct ipc64_perm.
type ipcPerm struct {
	Key  int32
	UID  uint32
	GID  uint32
	CUID uint32
	CGID uint32
	Mode uint32
	Seq  uint16
	_    uint16
	_    [2]uint64
}

// shmidDS is struct shmid64_ds.
type shmidDS struct {
	Perm   ipcPerm
	Segsz  uint64
	Atime  int64
	Dtime  int64
	Ctime  int64
	Cpid   int32
	Lpid   int32
	Nattch uint64
	_      [2]uint64
}

// semidDS is struct semid64_ds (x86_64 layout).
type semidDS struct {
	Perm  ipcPerm
	Otime int64
	_     uint64
	Ctime int64
	_     uint64
	Nsems uint64
	_     [2]uint64
}

// msqidDS is struct msqid64_ds.
type msqidDS struct {
	Perm   ipcPerm
	Stime  int64
	Rtime  int64
	Ctime  int64
	Cbytes uint64
	Qnum   uint64
	Qbytes uint64
	Lspid  int32
	Lrpid  int32
	_      [2]uint64
}

// infoBuf is big enough for struct shm_info, seminfo and msginfo.
type infoBuf [128]byte

func shmGet(key int32, size uint64, flag int) (int, error) {
	return linux.Syscall(func() (uintptr, unix.Errno) {
		r, _, e := unix.Syscall(unix.SYS_SHMGET, uintptr(key), uintptr(size), uintptr(flag))
		return r, e
	})
}

func shmCtl(id, cmd int, p unsafe.Pointer) (int, error) {
	return linux.Syscall(func() (uintptr, unix.Errno) {
		r, _, e := unix.Syscall(unix.SYS_SHMCTL, uintptr(id), uintptr(cmd), uintptr(p))
		return r, e
	})
}

func semGet(key int32, nsems, flag int) (int, error) {
	return linux.Syscall(func() (uintptr, unix.Errno) {
		r, _, e := unix.Syscall(unix.SYS_SEMGET, uintptr(key), uintptr(nsems), uintptr(flag))
		return r, e
	})
}

// semCtl passes p as the semun argument (a pointer member: buf or array).
func semCtl(id, num, cmd int, p unsafe.Pointer) (int, error) {
	return linux.Syscall(func() (uintptr, unix.Errno) {
		r, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), uintptr(num), uintptr(cmd), uintptr(p), 0, 0)
		return r, e
	})
}

func msgGet(key int32, flag int) (int, error) {
	return linux.Syscall(func() (uintptr, unix.Errno) {
		r, _, e := unix.Syscall(unix.SYS_MSGGET, uintptr(key), uintptr(flag), 0)
		return r, e
	})
}

func msgCtl(id, cmd int, p unsafe.Pointer) (int, error) {
	return linux.Syscall(func() (uintptr, unix.Errno) {
		r, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), uintptr(cmd), uintptr(p))
		return r, e
	})
}

// msgSnd sends buf, which holds the 8-byte native-endian mtype followed by
// the text.
func msgSnd(id int, buf []byte, flag int) error {
	if len(buf) < 8 {
		return unix.EINVAL
	}
	_, err := linux.Syscall(func() (uintptr, unix.Errno) {
		r, _, e := unix.Syscall6(unix.SYS_MSGSND, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8), uintptr(flag), 0, 0)
		return r, e
	})
	return err
}

// msgRcv receives into buf (8-byte mtype then text) and returns the text
// length.
func msgRcv(id int, buf []byte, typ int64, flag int) (int, error) {
	if len(buf) < 8 {
		return 0, unix.EINVAL
	}
	return linux.Syscall(func() (uintptr, unix.Errno) {
		r, _, e := unix.Syscall6(unix.SYS_MSGRCV, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8), uintptr(typ), uintptr(flag), 0)
		return r, e
	})
}

package files

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Eventfds (FILE_EVENTFD): the counter in pos, EFD_SEMAPHORE in flags bit 0.
func init() {
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_EVENTFD, anonInode: "eventfd",
		dump: (*Table).eventfd,
		open: openAlone(openEventfd),
		describe: func(f *imagepb.FileEntry) string {
			s := fmt.Sprintf(" count %d", f.Pos)
			if f.Flags&1 != 0 {
				s += " semaphore"
			}
			return s
		}})
}

func (t *Table) eventfd(f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
	fi := d.fi
	f.Kind = imagepb.FileKind_FILE_EVENTFD
	cnt, ok := fieldUint(fi, "eventfd-count", 16)
	if !ok {
		return 0, errors.New("eventfd: no eventfd-count in fdinfo")
	}
	f.Pos = int64(cnt)
	if sem, ok := fieldUint(fi, "eventfd-semaphore", 10); ok && sem != 0 {
		f.Flags |= 1 // EFD_SEMAPHORE
	}
	return t.add("", f), nil
}

// openEventfd makes the eventfd again with its counter and flags.
func openEventfd(f *imagepb.FileEntry) (int, error) {
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
}

func putU64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
}

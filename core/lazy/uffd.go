// Package lazy serves the private anonymous memory of a restored tree
// after it runs (restore --lazy-pages, issue 16): post-copy through
// userfaultfd.
//
// Each restored process gets, while it is still a stub, a userfaultfd
// created in it (the context is bound to its mm), taken into ctr-cr with
// pidfd_getfd and closed in the task: the task's fd table is exactly as
// dumped and ctr-cr is the only holder (plus the guard, below). Its
// private anonymous VMAs holding pages in the image are registered in
// MISSING mode instead of being filled. Once the tree runs, a first touch
// of a missing page stops the thread until ctr-cr copies the page in
// (UFFDIO_COPY), and a background pass copies everything still missing,
// so no page waits long.
//
// The program may unmap, madvise(DONTNEED), mremap or fork while pages
// are still missing: the context is created with the EVENT_UNMAP,
// EVENT_REMOVE, EVENT_REMAP and EVENT_FORK features, the kernel reports
// each (and makes UFFDIO_COPY fail with EAGAIN until the report is read,
// so a copy never races one), and the set of pages still owed follows
// them: dropped ranges are owed no more (a later fault there gets a zero
// page, as an anonymous page dropped by the program does), moved ranges
// are owed at their new address, and a fork child gets a context of its
// own with a copy of its parent's owed set, served like the others.
//
// The guarantee when the page source or ctr-cr dies: see guard.go.
package lazy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// userfaultfd ABI (uapi/linux/userfaultfd.h).
const (
	uffdAPI          = 0xaa
	uffdioAPI        = 0xc018aa3f
	uffdioRegister   = 0xc020aa00
	uffdioWake       = 0x8010aa02
	uffdioCopy       = 0xc028aa03
	uffdioZeropage   = 0xc020aa04
	registerMissing  = 1 << 0
	featureEventFork = 1 << 1
	featureRemap     = 1 << 2
	featureRemove    = 1 << 3
	featureUnmap     = 1 << 6

	eventPagefault = 0x12
	eventFork      = 0x13
	eventRemap     = 0x14
	eventRemove    = 0x15
	eventUnmap     = 0x16

	msgSize  = 32
	pageSize = 4096
)

// Features are the userfaultfd features a lazy restore needs.
const Features = featureEventFork | featureRemap | featureRemove | featureUnmap

// ErrUnavailable is wrapped when this kernel or this ctr-cr's privileges
// cannot do a lazy restore.
var ErrUnavailable = errors.New("lazy restore (userfaultfd with fork/remap/remove/unmap events) not available")

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

// Handshake does UFFDIO_API on a fresh userfaultfd asking for Features.
// EVENT_FORK needs CAP_SYS_PTRACE in ctr-cr.
func Handshake(uffd int) error {
	api := [3]uint64{uffdAPI, Features, 0}
	if err := ioctl(uffd, uffdioAPI, unsafe.Pointer(&api)); err != nil {
		return fmt.Errorf("%w: UFFDIO_API(features %#x): %w", ErrUnavailable, Features, err)
	}
	if api[1]&Features != Features {
		return fmt.Errorf("%w: the kernel offers userfaultfd features %#x", ErrUnavailable, api[1])
	}
	return nil
}

// RegisterMissing registers [start, end) of the context's mm in MISSING
// mode.
func RegisterMissing(uffd int, start, end uint64) error {
	reg := [4]uint64{start, end - start, registerMissing, 0}
	if err := ioctl(uffd, uffdioRegister, unsafe.Pointer(&reg)); err != nil {
		return fmt.Errorf("UFFDIO_REGISTER(MISSING) %#x-%#x: %w", start, end, err)
	}
	return nil
}

// copyPages copies src to dst in the context's mm and wakes the threads
// waiting there. It returns the bytes copied (a partial copy stops at the
// first page already present, EEXIST) and the error.
//
// src's address reaches the kernel as a number inside the argument block,
// which Go does not track: a buffer on the goroutine stack moves when the
// stack grows, so the address is taken right before the system call, with
// no Go call in between (not through ioctl).
func copyPages(uffd int, dst uint64, src []byte) (uint64, error) {
	var c [5]uint64
	var err error
	for {
		c = [5]uint64{dst, uint64(uintptr(unsafe.Pointer(&src[0]))), uint64(len(src)), 0, 0}
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(uffd), uffdioCopy, uintptr(unsafe.Pointer(&c)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			err = e
		}
		break
	}
	runtime.KeepAlive(src)
	n := int64(c[4])
	if n < 0 {
		n = 0
	}
	return uint64(n), err
}

// zeroPage maps a zero page at addr and wakes its waiters.
func zeroPage(uffd int, addr uint64) error {
	z := [4]uint64{addr, pageSize, 0, 0}
	return ioctl(uffd, uffdioZeropage, unsafe.Pointer(&z))
}

// wake wakes the threads waiting on [addr, addr+pageSize).
func wake(uffd int, addr uint64) error {
	r := [2]uint64{addr, pageSize}
	return ioctl(uffd, uffdioWake, unsafe.Pointer(&r))
}

// msg is one uffd_msg.
type msg struct {
	event    uint8
	a, b, c  uint64 // arg words: pagefault (flags, address), remap (from, to, len), remove/unmap (start, end)
	forkUffd int
}

func parseMsg(b []byte) msg {
	m := msg{event: b[0]}
	m.a = binary.LittleEndian.Uint64(b[8:])
	m.b = binary.LittleEndian.Uint64(b[16:])
	m.c = binary.LittleEndian.Uint64(b[24:])
	m.forkUffd = int(binary.LittleEndian.Uint32(b[8:]))
	return m
}

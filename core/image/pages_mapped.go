package image

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// verifyWindow is how much of a pages file VerifyMapped maps at a time:
// what is mapped counts in ctr-cr's RSS.
const verifyWindow = 8 << 20

// VerifyMapped is Verify for a reader that read nothing through ReadAt
// (restore's task reads the pages itself): it hashes the whole file from
// read-only mappings of it, a window at a time, so the bytes go from the
// page cache into the hash without a copy into a buffer (a quarter less
// CPU than read(2) for a 1 GiB file on the test VM). A file that is not
// the size the inventory records, or shrinks while mapped (a fault on the
// mapping), is a checksum error, not a crash. Anything already read
// through ReadAt falls back to Verify.
func (p *Pages) VerifyMapped() error {
	if p.h == nil {
		return nil
	}
	f, isFile := p.f.(*os.File)
	if p.err != nil || p.next != 0 || !isFile {
		return p.Verify() // not a local file (a page server's): read it
	}
	size := int64(p.sum.Size)
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return p.l.err(err)
	}
	if st.Size != size {
		return p.l.err(fmt.Errorf("%w: size %d, inventory.img records %d", ErrChecksum, st.Size, size))
	}
	for off := int64(0); off < size; off += verifyWindow {
		if err := p.hashWindow(f, off, min(verifyWindow, size-off)); err != nil {
			return p.l.err(err)
		}
	}
	p.next = size
	return finishSum(p.l, p.sum, io.NewSectionReader(p.f, size, 1), p.h, size, func() []byte { return p.h.Sum(nil) })
}

// hashWindow hashes n bytes of the file at off through a mapping; a fault
// on it (the file cut short meanwhile) is an error.
func (p *Pages) hashWindow(f *os.File, off, n int64) (err error) {
	m, err := unix.Mmap(int(f.Fd()), off, int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map %d bytes at %d to verify: %w", n, off, err)
	}
	defer unix.Munmap(m)
	_ = unix.Madvise(m, unix.MADV_SEQUENTIAL)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if _, fault := r.(interface{ Addr() uintptr }); !fault {
				panic(r)
			}
			err = fmt.Errorf("%w: the file changed while it was verified (%v)", ErrChecksum, r)
		}
	}()
	p.h.Write(m)
	return nil
}

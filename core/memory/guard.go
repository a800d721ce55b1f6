package memory

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Guard regions (MADV_GUARD_INSTALL, Linux 6.13+) are page-table markers
// that make a page fault with SIGSEGV on any access without a VMA of their
// own; /proc/PID/mem cannot read them (EIO). smaps marks a VMA that may
// hold some with "gu"; pagemap reports each guard page with bit 58 (6.15+)
// and PAGEMAP_SCAN with PAGE_IS_GUARD.
const (
	pmGuard          = 1 << 58
	pageIsGuard      = 1 << 8
	pagemapScanIoctl = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)

	// MadvGuardInstall and MadvGuardRemove are the madvise advice values.
	MadvGuardInstall = 102
	MadvGuardRemove  = 103
)

// pmScanArg is struct pm_scan_arg of linux/fs.h.
type pmScanArg struct {
	Size, Flags, Start, End, WalkEnd, Vec, VecLen, MaxPages uint64
	CategoryInverted, CategoryMask, CategoryAnyofMask       uint64
	ReturnMask                                              uint64
}

// pageRegion is struct page_region of linux/fs.h.
type pageRegion struct {
	Start, End, Categories uint64
}

// GuardRegions returns the runs of guard pages in [start, end) of the
// process whose /proc/PID/pagemap is pagemap, ascending and merged.
func GuardRegions(pagemap *os.File, start, end uint64) ([]*imagepb.VmaGuardRegion, error) {
	var out []*imagepb.VmaGuardRegion
	vec := make([]pageRegion, 64)
	// (Fd before the loop: vec may live on the goroutine's stack, whose
	// address the arguments hold as an integer; a call between taking it
	// and the syscall could move the stack, the kernel then writing into
	// the old copy)
	fd := pagemap.Fd()
	for start < end {
		a := pmScanArg{
			Start: start, End: end,
			Vec: uint64(uintptr(unsafe.Pointer(&vec[0]))), VecLen: uint64(len(vec)),
			CategoryMask: pageIsGuard, ReturnMask: pageIsGuard,
		}
		a.Size = uint64(unsafe.Sizeof(a))
		n, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, pagemapScanIoctl, uintptr(unsafe.Pointer(&a)))
		if errno != 0 {
			return nil, fmt.Errorf("PAGEMAP_SCAN for guard pages in %#x-%#x: %w", start, end, errno)
		}
		for _, r := range vec[:n] {
			if k := len(out); k > 0 && out[k-1].End == r.Start {
				out[k-1].End = r.End
				continue
			}
			out = append(out, &imagepb.VmaGuardRegion{Start: r.Start, End: r.End})
		}
		if a.WalkEnd <= start {
			return nil, fmt.Errorf("PAGEMAP_SCAN for guard pages in %#x-%#x made no progress", start, end)
		}
		start = a.WalkEnd
	}
	return out, nil
}

// checkGuards verifies that v's guard regions are page-aligned, non-empty,
// ascending and inside v.
func checkGuards(v *imagepb.Vma) error {
	prev := v.Start
	for _, g := range v.GuardRegions {
		if g.Start%PageSize != 0 || g.End%PageSize != 0 || g.End <= g.Start || g.Start < prev || g.End > v.End {
			return fmt.Errorf("vma %#x-%#x: bad guard region %#x-%#x", v.Start, v.End, g.Start, g.End)
		}
		prev = g.End
	}
	return nil
}

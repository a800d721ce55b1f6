package memory

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Dirty tracking without soft-dirty (issue 16): a userfaultfd created in
// the tracked process (its context is bound to that mm) is registered in
// write-protect mode with UFFD_FEATURE_WP_ASYNC over the process's private
// VMAs. In async mode a write to a write-protected page is not reported to
// anyone: the kernel just clears the page's uffd-wp bit and the write goes
// on, so the program sees nothing. PAGEMAP_SCAN with PAGE_IS_WRITTEN then
// lists, from /proc/PID/pagemap, the pages whose bit is clear (written
// since they were protected, or newly faulted in, moved by mremap, or in a
// VMA registered since), and PM_SCAN_WP_MATCHING protects them again in
// the same walk. Closing the last reference to the userfaultfd drops the
// registration and every uffd-wp bit: the registration must outlive the
// ctr-cr command that armed it (see core/dump's tracking holder).

// userfaultfd ABI (uapi/linux/userfaultfd.h) and PAGEMAP_SCAN (uapi/linux/fs.h).
const (
	uffdAPI            = 0xaa
	uffdioAPI          = 0xc018aa3f
	uffdioRegister     = 0xc020aa00
	uffdRegisterModeWP = 1 << 1
	uffdFeatureWPAsync = 1 << 15
	pageIsWritten      = 1 << 1
	pmScanWPMatching   = 1 << 0
	pmScanCheckWPAsync = 1 << 1
	pmScanArgSize      = 96
	pmScanVecLen       = 1024
	// Not WP_UNPOPULATED: unpopulated pages count as written anyway, and
	// its markers would make the arm populate the page tables of sparse
	// mappings and show in pagemap as swapped pages.
	uffdRequiredFeature = uffdFeatureWPAsync
)

// ErrNoTracking is wrapped when this kernel cannot track written pages
// (no userfaultfd write-protect in async mode, or no PAGEMAP_SCAN).
var ErrNoTracking = errors.New("dirty-page tracking (userfaultfd WP_ASYNC + PAGEMAP_SCAN) not available")

// EnableTracking performs the UFFDIO_API handshake on a fresh userfaultfd,
// asking for asynchronous write-protection (Linux 6.7+).
func EnableTracking(uffd int) error {
	api := [3]uint64{uffdAPI, uffdRequiredFeature, 0}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(uffd), uffdioAPI, uintptr(unsafe.Pointer(&api))); e != 0 {
		return fmt.Errorf("%w: UFFDIO_API(WP_ASYNC): %w", ErrNoTracking, e)
	}
	if api[1]&uffdRequiredFeature != uffdRequiredFeature {
		return fmt.Errorf("%w: the kernel offers userfaultfd features %#x, without WP_ASYNC", ErrNoTracking, api[1])
	}
	return nil
}

// RegisterWP registers [start, end) of the tracked mm in write-protect
// mode. It fails with EBUSY when the range is registered with another
// userfaultfd (the program's own), EINVAL for memory that cannot be
// tracked; registering again a range registered by uffd is a no-op that
// keeps its write-protection.
func RegisterWP(uffd int, start, end uint64) error {
	reg := [4]uint64{start, end - start, uffdRegisterModeWP, 0}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(uffd), uffdioRegister, uintptr(unsafe.Pointer(&reg))); e != 0 {
		return e
	}
	return nil
}

// ScanWritten returns the pages of the spans of pagemap (an open
// /proc/PID/pagemap) written since they were last protected; with rearm
// it protects them again in the same walk. Every span must be registered
// in async write-protect mode (the walk fails otherwise).
func ScanWritten(pagemap int, spans Spans, rearm bool) (Spans, error) {
	flags := uint64(pmScanCheckWPAsync)
	if rearm {
		flags |= pmScanWPMatching
	}
	return scan(pagemap, spans, pmScanArg{Flags: flags, CategoryMask: pageIsWritten, ReturnMask: pageIsWritten})
}

// scan runs PAGEMAP_SCAN with the flags and categories of q over every
// span and returns the regions found, merged.
func scan(pagemap int, spans Spans, q pmScanArg) (Spans, error) {
	vec := make([]pageRegion, pmScanVecLen)
	var out Spans
	for _, s := range spans {
		start := s.Start
		for start < s.End {
			a := q
			a.Size, a.Start, a.End = pmScanArgSize, start, s.End
			a.Vec, a.VecLen = uint64(uintptr(unsafe.Pointer(&vec[0]))), uint64(len(vec))
			n, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(pagemap), pagemapScanIoctl, uintptr(unsafe.Pointer(&a)))
			if e != 0 {
				if e == unix.ENOTTY || e == unix.EINVAL && len(out) == 0 {
					return nil, fmt.Errorf("%w: PAGEMAP_SCAN: %w", ErrNoTracking, e)
				}
				return nil, fmt.Errorf("PAGEMAP_SCAN %#x-%#x: %w", start, s.End, e)
			}
			for _, r := range vec[:n] {
				out = append(out, Span{r.Start, r.End})
			}
			// walk_end may come back short of the last region when the
			// vector fills at the end of the walk: go on from whichever
			// is further
			next := a.WalkEnd
			if n > 0 && vec[n-1].End > next {
				next = vec[n-1].End
			}
			if next <= start {
				break
			}
			start = next
		}
	}
	runtime.KeepAlive(vec)
	return out.normalize(), nil
}

// ScanReusable returns the pages of spans (registered with async
// write-protection) that a parent image can stand for: not written since
// they were last protected, present, neither a zero page nor a page of the
// mapped file. Swapped pages are not among them: PAGEMAP_SCAN (like
// pagemap) reports the kernel's uffd-wp markers as swapped, and a marker
// is what MADV_DONTNEED leaves in a private file mapping, whose page then
// reads from the file again (DumpPrivate reads such pages afresh).
//
// fileBacked says that the spans may hold pages of a mapped file (a
// private file mapping): only then is each page's struct page looked at
// (PAGE_IS_FILE), which makes the walk several times slower over a large
// populated mapping; an anonymous mapping holds no file pages.
func ScanReusable(pagemap int, spans Spans, fileBacked bool) (Spans, error) {
	const (
		pageIsFile    = 1 << 2
		pageIsPresent = 1 << 3
		pageIsPfnzero = 1 << 5
	)
	none := uint64(pageIsWritten | pageIsPfnzero)
	if fileBacked {
		none |= pageIsFile
	}
	return scan(pagemap, spans, pmScanArg{Flags: pmScanCheckWPAsync,
		CategoryInverted: none, CategoryMask: none,
		CategoryAnyofMask: pageIsPresent, ReturnMask: pageIsPresent})
}

// Without returns vmas with the pages of s cut out of the private ones
// (those DumpPrivate reads): a VMA partly in s comes back as the pieces
// outside it, each a Vma of its own with the same kind and protection, so
// that DumpPrivate neither reads nor walks the pagemap of the pages a
// parent image stands for. Other VMAs come back as they are.
func Without(vmas []*imagepb.Vma, s Spans) []*imagepb.Vma {
	if len(s) == 0 {
		return vmas
	}
	out := make([]*imagepb.Vma, 0, len(vmas))
	for _, v := range vmas {
		if !privatePages(v) || v.NoPages {
			out = append(out, v)
			continue
		}
		for _, g := range (Spans{{v.Start, v.End}}).Subtract(s) {
			out = append(out, &imagepb.Vma{Start: g.Start, End: g.End, Prot: v.Prot, Shared: v.Shared,
				Kind: v.Kind, Name: v.Name, NoPages: v.NoPages})
		}
	}
	return out
}

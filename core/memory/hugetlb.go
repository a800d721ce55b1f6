package memory

import (
	"fmt"
	"math/bits"
	"strings"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// hugetlbAnonPath is how /proc shows a MAP_ANONYMOUS|MAP_HUGETLB mapping:
// an unlinked file of the kernel's internal hugetlbfs mount.
const hugetlbAnonPath = "/anon_hugepage"

// ClassifyHugetlb fills v for a hugetlb VMA (smaps "ht"): a private
// anonymous one becomes VMA_HUGETLB_ANON with its page size, its pages
// dumped like private anonymous memory; a shared anonymous one becomes
// VMA_ANON_SHARED with its page size (a memory object made of huge pages);
// a hugetlbfs file mapping is refused by name (taking any of them for the
// deleted file /proc shows would restore ordinary pages and lose the
// private ones).
func ClassifyHugetlb(v *imagepb.Vma, s *procfs.SmapsEntry) error {
	if !IsHugetlbAnon(s) {
		return fmt.Errorf("hugetlbfs file mapping %s: not supported", strings.TrimSpace(v.Name))
	}
	if err := checkHugePageSize(s.KernelPageSize); err != nil {
		return fmt.Errorf("anonymous hugetlb mapping: %w", err)
	}
	v.HugetlbPageSize = s.KernelPageSize
	if s.Shared {
		// a shared memory object like MAP_SHARED|MAP_ANONYMOUS memory,
		// made of huge pages (files.AddMapped records its page size)
		v.Kind = imagepb.VmaKind_VMA_ANON_SHARED
		return nil
	}
	v.Kind, v.FileId, v.Pgoff, v.NoPages = imagepb.VmaKind_VMA_HUGETLB_ANON, 0, 0, false
	return nil
}

// IsHugetlbAnon reports whether s is a MAP_ANONYMOUS|MAP_HUGETLB mapping.
func IsHugetlbAnon(s *procfs.SmapsEntry) bool {
	return s.Path == hugetlbAnonPath && s.Deleted && s.HasFlag("ht")
}

// HugetlbObjectFlags returns the mmap flags beyond MAP_SHARED|MAP_ANONYMOUS
// that make a shared anonymous object of huge pages of pageSize bytes.
func HugetlbObjectFlags(pageSize uint64) (int, error) {
	const mapHugetlb, mapHugeShift = 0x40000, 26
	if err := checkHugePageSize(pageSize); err != nil {
		return 0, err
	}
	return mapHugetlb | bits.TrailingZeros64(pageSize)<<mapHugeShift, nil
}

// checkHugePageSize accepts a power of two from 64 KiB to 16 GiB.
func checkHugePageSize(size uint64) error {
	if size < 64<<10 || size > 16<<30 || bits.OnesCount64(size) != 1 {
		return fmt.Errorf("bad huge page size %d", size)
	}
	return nil
}

// HugetlbMapFlags returns the mmap flags beyond MAP_PRIVATE|MAP_FIXED that
// recreate hugetlb VMA v: MAP_ANONYMOUS|MAP_HUGETLB with its page size
// encoded (MAP_HUGE_SHIFT), after checking the size and v's alignment.
func HugetlbMapFlags(v *imagepb.Vma) (uint64, error) {
	const mapAnonymous, mapHugetlb, mapHugeShift = 0x20, 0x40000, 26
	if err := checkHugePageSize(v.HugetlbPageSize); err != nil {
		return 0, err
	}
	if v.Start%v.HugetlbPageSize != 0 || v.End%v.HugetlbPageSize != 0 {
		return 0, fmt.Errorf("not aligned to its huge page size %d", v.HugetlbPageSize)
	}
	return mapAnonymous | mapHugetlb | uint64(bits.TrailingZeros64(v.HugetlbPageSize))<<mapHugeShift, nil
}

// aioRingPath is how /proc shows the ring of an aio context (io_setup).
const aioRingPath = "/[aio]"

// RefuseSpecial returns an error naming the kind of the VMA of s when the
// engine cannot carry it: the ring of an aio context. Its ring (head, tail,
// completed events) is in the task's memory and its size gives nr_events,
// but requests still in flight (an O_DIRECT read, an IOCB_CMD_POLL waiting
// for its file) are nowhere the kernel shows: no /proc file, no syscall
// counts them without submitting requests of its own, which moves the
// ring's head and tail for good. A restore would lose their completions,
// so an idle context cannot be told from a busy one and both are refused.
// (CRIU dumps the ring without looking for them.)
func RefuseSpecial(s *procfs.SmapsEntry) error {
	if s.Path == aioRingPath {
		return fmt.Errorf("aio ring (io_setup context %#x): not supported: requests in flight cannot be seen, and a restore would lose them", s.Start)
	}
	return nil
}

package kernel

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pagemap and userfaultfd ABI.
const (
	pmPresent = 1 << 63
	pmPfnMask = 1<<55 - 1

	pagemapScan   = 0xc0606610 // PAGEMAP_SCAN: _IOWR('f', 16, struct pm_scan_arg)
	pmScanAllCats = 0xff       // PAGE_IS_WPALLOWED .. PAGE_IS_SOFT_DIRTY (6.7 set)
	pageIsPresent = 1 << 3

	uffdioAPI             = 0xc018aa3f // UFFDIO_API: _IOWR(0xAA, 0x3F, struct uffdio_api)
	uffdAPIVersion        = 0xaa
	uffdUserModeOnly      = 1
	uffdFeatureWP         = 1 << 0  // UFFD_FEATURE_PAGEFAULT_FLAG_WP
	uffdFeatureMissingShm = 1 << 5  // UFFD_FEATURE_MISSING_SHMEM
	uffdFeatureWPAsync    = 1 << 15 // UFFD_FEATURE_WP_ASYNC
)

// pageRegion is struct page_region.
type pageRegion struct {
	Start, End, Categories uint64
}

// pmScanArg is struct pm_scan_arg (96 bytes). Vec is a typed pointer so that
// the garbage collector tracks the buffer while the kernel writes it.
type pmScanArg struct {
	Size              uint64
	Flags             uint64
	Start             uint64
	End               uint64
	WalkEnd           uint64
	Vec               *[4]pageRegion
	VecLen            uint64
	MaxPages          uint64
	CategoryInverted  uint64
	CategoryMask      uint64
	CategoryAnyofMask uint64
	ReturnMask        uint64
}

// probeMemory runs the pagemap, PAGEMAP_SCAN, userfaultfd and soft-dirty
// probes on a private anonymous page of this process, unmapped afterwards.
func probeMemory(p *prober) {
	page, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		p.setAll([]string{fPagemap, fPagemapPFN, fPagemapScan}, "mmap probe page: %s", errno(err))
	} else {
		page[0] = 1 // make it resident
		addr := uint64(uintptr(unsafe.Pointer(&page[0])))
		probePagemap(p, addr)
		probePagemapScan(p, addr, uint64(len(page)))
		_ = unix.Munmap(page)
	}
	probeUserfaultfd(p)
	probeSoftDirty(p)
}

// probePagemap reads the pagemap entry of the resident page at addr.
func probePagemap(p *prober, addr uint64) {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		p.setAll([]string{fPagemap, fPagemapPFN}, "open /proc/self/pagemap: %s", errno(err))
		return
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], int64(addr/uint64(os.Getpagesize())*8)); err != nil {
		p.setAll([]string{fPagemap, fPagemapPFN}, "read /proc/self/pagemap: %s", errno(err))
		return
	}
	e := binary.LittleEndian.Uint64(b[:])
	if e&pmPresent == 0 {
		p.setAll([]string{fPagemap, fPagemapPFN}, "resident page reported not present (entry %#x)", e)
		return
	}
	p.set(fPagemap, true, "present bit set for a resident page")
	if e&pmPfnMask == 0 {
		p.set(fPagemapPFN, false, "PFN hidden (zero): needs CAP_SYS_ADMIN")
		return
	}
	p.set(fPagemapPFN, true, "non-zero PFN for a resident page")
}

// probePagemapScan runs PAGEMAP_SCAN over the page at addr.
func probePagemapScan(p *prober, addr, size uint64) {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		p.set(fPagemapScan, false, "open /proc/self/pagemap: %s", errno(err))
		return
	}
	defer f.Close()
	var vec [4]pageRegion
	arg := pmScanArg{Start: addr, End: addr + size, Vec: &vec, VecLen: uint64(len(vec)), ReturnMask: pmScanAllCats}
	arg.Size = uint64(unsafe.Sizeof(arg))
	r, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), pagemapScan, uintptr(unsafe.Pointer(&arg)))
	switch {
	case e != 0:
		p.set(fPagemapScan, false, "ioctl(PAGEMAP_SCAN): %s", errno(e))
	case r != 1 || vec[0].Categories&pageIsPresent == 0:
		p.set(fPagemapScan, false, "unexpected answer: %d regions, first categories %#x", r, vec[0].Categories)
	default:
		p.set(fPagemapScan, true, "1 region over the probe page, categories %#x", vec[0].Categories)
	}
}

// probeUserfaultfd creates a userfaultfd (user-mode-only when plain creation
// is refused), negotiates the API and reports the feature mask.
func probeUserfaultfd(p *prober) {
	flags := uintptr(unix.O_CLOEXEC | unix.O_NONBLOCK)
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, flags, 0, 0)
	mode := ""
	if e == unix.EPERM {
		fd, _, e = unix.Syscall(unix.SYS_USERFAULTFD, flags|uffdUserModeOnly, 0, 0)
		mode = ", user-mode only"
	}
	if e != 0 {
		p.set(fUserfaultfd, false, "userfaultfd: %s", errno(e))
		return
	}
	defer unix.Close(int(fd))
	api := [3]uint64{uffdAPIVersion, 0, 0} // api, features, ioctls
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uffdioAPI, uintptr(unsafe.Pointer(&api))); e != 0 {
		p.set(fUserfaultfd, false, "UFFDIO_API: %s", errno(e))
		return
	}
	yn := func(bit uint64) string {
		if api[1]&bit != 0 {
			return "yes"
		}
		return "no"
	}
	p.set(fUserfaultfd, true, "features %#x (wp %s, wp-async %s, shmem %s%s)", api[1],
		yn(uffdFeatureWP), yn(uffdFeatureWPAsync), yn(uffdFeatureMissingShm), mode)
}

// probeSoftDirty looks for the "sd" VmFlag in /proc/self/smaps: new VMAs carry
// it only when the kernel has CONFIG_MEM_SOFT_DIRTY.
func probeSoftDirty(p *prober) {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		p.set(fSoftDirty, false, "unknown (read /proc/self/smaps: %s); uffd-wp used", errno(err))
		return
	}
	total, sd := 0, 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		flags, ok := strings.CutPrefix(sc.Text(), "VmFlags:")
		if !ok {
			continue
		}
		total++
		for _, f := range strings.Fields(flags) {
			if f == "sd" {
				sd++
				break
			}
		}
	}
	if sd == 0 {
		p.set(fSoftDirty, false, "unknown/absent (no sd VmFlag on %d mappings); uffd-wp used", total)
		return
	}
	p.set(fSoftDirty, true, "sd VmFlag on %d of %d mappings", sd, total)
}

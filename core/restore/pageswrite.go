package restore

import (
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/memory"
)

// While the task reads most of its pages itself (pagesread.go), ctr-cr
// writes the tail of them into it at the same time, on the other CPU:
// process_vm_writev from read-only mappings of the pages file, one copy
// as the task's own reads. A big image is then filled by two CPUs
// instead of one. The share ctr-cr takes (ourSharePct) is smaller than
// the task's because ctr-cr also computes the file's checksum. Only
// parts in VMAs that the batch finishing the memory leaves alone are
// shared: that batch mprotects, guards and seals VMAs while ctr-cr may
// still be writing, and a write racing an mprotect would fail.

const (
	// shareMin: below this many bytes for the task to read, it reads
	// them all (a goroutine and mappings cost more than they save).
	shareMin = 16 << 20
	// ourSharePct of those bytes, at most, ctr-cr writes.
	ourSharePct = 40
	// writeWindow: how much of the pages file is mapped at a time, and
	// writeChunk: how much one process_vm_writev moves. What is mapped
	// counts in ctr-cr's RSS.
	writeWindow = 8 << 20
	writeChunk  = 2 << 20
)

// shareParts splits the parts the task may read (file order) into those
// it reads and those ctr-cr writes beside it: the tail of the parts that
// lie in stable (VMAs nothing changes while the task reads).
func shareParts(parts []memory.PagePart, stable memory.Spans) (task, ours []memory.PagePart) {
	var total uint64
	for _, p := range parts {
		total += p.Len
	}
	if total < shareMin {
		return parts, nil
	}
	shareable, fixed := memory.SplitParts(parts, stable, nil)
	rest, ours := memory.TakeTail(shareable, total*ourSharePct/100)
	task = append(fixed, rest...)
	sortParts(task)
	return task, ours
}

// sortParts orders parts by file offset (the task's reads sequential).
func sortParts(parts []memory.PagePart) {
	for i := 1; i < len(parts); i++ {
		for j := i; j > 0 && parts[j].Off < parts[j-1].Off; j-- {
			parts[j], parts[j-1] = parts[j-1], parts[j]
		}
	}
}

// unsettledSpans are the VMAs the batch that finishes the memory changes:
// those it mprotects (protect), those with guard pages, the sealed ones.
func unsettledSpans(vmas, protect []*imagepb.Vma) memory.Spans {
	var s memory.Spans
	for _, v := range protect {
		s = append(s, memory.Span{Start: v.Start, End: v.End})
	}
	for _, v := range vmas {
		if len(v.GuardRegions) > 0 || hasVmFlag(v, "sl") {
			s = append(s, memory.Span{Start: v.Start, End: v.End})
		}
	}
	return s.Union(nil)
}

// writePagesAsync starts writing parts from f into the task and returns
// the function that waits for it (the pages written, or the first error;
// the same on every call). Every path out of restoreMemory must wait.
func (r *restorer) writePagesAsync(f *os.File, parts []memory.PagePart) func() (uint64, error) {
	if len(parts) == 0 || f == nil {
		return func() (uint64, error) { return 0, nil }
	}
	type result struct {
		n   uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := writeFromFile(r.pid, f, parts)
		done <- result{n, err}
	}()
	return sync.OnceValues(func() (uint64, error) {
		res := <-done
		return res.n, res.err
	})
}

// writeFromFile copies parts of file f into pid's memory with
// process_vm_writev from read-only mappings of f, a window at a time; it
// returns the number of pages written. A short write (a page the kernel
// cannot fault in, the file cut short) is an error naming the address.
func writeFromFile(pid int, f *os.File, parts []memory.PagePart) (uint64, error) {
	var pages uint64
	for _, p := range parts {
		for done := uint64(0); done < p.Len; {
			n := min(p.Len-done, writeWindow)
			if err := writeWindowAt(pid, f, p.Off+int64(done), p.Addr+done, n); err != nil {
				return pages, err
			}
			done += n
			pages += n / memory.PageSize
		}
	}
	return pages, nil
}

// writeWindowAt maps n bytes of f at off and writes them to addr in pid.
func writeWindowAt(pid int, f *os.File, off int64, addr, n uint64) error {
	m, err := unix.Mmap(int(f.Fd()), off, int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map %d bytes of pages at offset %d: %w", n, off, err)
	}
	defer unix.Munmap(m)
	for o := uint64(0); o < n; {
		c := min(n-o, writeChunk)
		local := []unix.Iovec{{Base: (*byte)(unsafe.Pointer(&m[o])), Len: c}}
		remote := []unix.RemoteIovec{{Base: uintptr(addr + o), Len: int(c)}}
		w, err := unix.ProcessVMWritev(pid, local, remote, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil || w <= 0 {
			return fmt.Errorf("process_vm_writev of pages at offset %d into %#x (%d bytes): %d written: %v", off+int64(o), addr+o, c, w, err)
		}
		o += uint64(w)
	}
	return nil
}

package procfs

import (
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// SmapsEntry is one VMA block of /proc/<pid>/smaps: the maps-style header
// line followed by "Key:   N kB" lines and a final "VmFlags:" line.
//
// VmFlags holds the two-letter mnemonics in kernel order (see proc(5) and
// fs/proc/task_mmu.c show_smap_vma_flags). Values seen on Linux 6.18:
//
//	file text        rd ex mr mw me
//	file relro/data  rd mr mw me ac / rd wr mr mw me ac
//	[heap], anon     rd wr mr mw me ac
//	mlock()ed anon   rd wr mr mw me lo ac
//	PROT_NONE guard  mr mw me
//	MAP_SHARED       rd wr sh mr mw me ms (file, memfd, SysV, /dev/zero)
//	[stack]          rd wr mr mw me gd ac
//	[vdso]           rd ex mr mw me de
//	[vvar], [vvar_vclock]  rd mr pf io de dd
//	[vsyscall]       ex
//
// "sd" (soft-dirty) never appears on kernels without CONFIG_MEM_SOFT_DIRTY
// (the 6.18 test kernel).
type SmapsEntry struct {
	VMA                // parsed header line
	Size      uint64   // "Size:" in bytes
	Rss       uint64   // "Rss:" in bytes
	Anonymous uint64   // "Anonymous:" in bytes
	Swap      uint64   // "Swap:" in bytes
	VmFlags   []string // two-letter flags, e.g. "rd", "gd"
	// KernelPageSize is "KernelPageSize:" in bytes (4096, or the huge
	// page size of a hugetlb mapping); 0 if the line is missing.
	KernelPageSize uint64
}

// HasFlag reports whether flag (a two-letter VmFlags mnemonic) is set.
func (e *SmapsEntry) HasFlag(flag string) bool {
	return slices.Contains(e.VmFlags, flag)
}

// Smaps is the parsed content of /proc/<pid>/smaps, in file order, which is
// strictly ascending by Start (ParseSmaps enforces this).
type Smaps []SmapsEntry

// Find returns the entry whose VMA starts exactly at start.
func (s Smaps) Find(start uint64) (*SmapsEntry, bool) {
	i := sort.Search(len(s), func(i int) bool { return s[i].Start >= start })
	if i < len(s) && s[i].Start == start {
		return &s[i], true
	}
	return nil, false
}

// ParseSmaps parses the content of /proc/<pid>/smaps. Each block must start
// with a valid maps header and carry a VmFlags line; the Size, Rss,
// Anonymous and Swap lines are converted from kB to bytes, other keys are
// ignored. Errors wrap ErrMalformed and name the line.
func ParseSmaps(r io.Reader) (Smaps, error) {
	var out Smaps
	var cur *SmapsEntry
	hasFlags := false
	sc := lineScanner(r)
	n := 0
	finish := func() error {
		if cur != nil && !hasFlags {
			return malformed("smaps", n, "VMA %x-%x has no VmFlags line", cur.Start, cur.End)
		}
		return nil
	}
	for sc.Scan() {
		n++
		line := sc.Text()
		first, _ := nextField(line)
		if !strings.HasSuffix(first, ":") {
			// Header line of the next VMA.
			if err := finish(); err != nil {
				return nil, err
			}
			v, err := parseMapsLine(line)
			if err != nil {
				return nil, malformed("smaps", n, "%v", err)
			}
			if len(out) > 0 && v.Start < out[len(out)-1].End {
				return nil, malformed("smaps", n, "VMA %x-%x not above previous", v.Start, v.End)
			}
			out = append(out, SmapsEntry{VMA: v})
			cur, hasFlags = &out[len(out)-1], false
			continue
		}
		if cur == nil {
			return nil, malformed("smaps", n, "%q before the first VMA header", line)
		}
		key, val, _ := strings.Cut(line, ":")
		var dst *uint64
		switch key {
		case "VmFlags":
			cur.VmFlags = strings.Fields(val)
			hasFlags = true
			continue
		case "Size":
			dst = &cur.Size
		case "Rss":
			dst = &cur.Rss
		case "Anonymous":
			dst = &cur.Anonymous
		case "Swap":
			dst = &cur.Swap
		case "KernelPageSize":
			dst = &cur.KernelPageSize
		default:
			continue
		}
		kb, err := parseKB(val)
		if err != nil {
			return nil, malformed("smaps", n, "%s: %v", key, err)
		}
		*dst = kb
	}
	if err := sc.Err(); err != nil {
		return nil, scanErr("smaps", n, err)
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return out, nil
}

// ReadSmaps parses /proc/<pid>/smaps.
func ReadSmaps(pid int) (Smaps, error) {
	return parseFile(PidPath(pid, "smaps"), ParseSmaps)
}

// parseKB parses "   123 kB" into bytes.
func parseKB(s string) (uint64, error) {
	f := strings.Fields(s)
	if len(f) != 2 || f[1] != "kB" {
		return 0, msgError("want \"<n> kB\", got " + strconv.Quote(s))
	}
	v, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil || v > (^uint64(0))>>10 {
		return 0, msgError("bad size " + strconv.Quote(f[0]))
	}
	return v << 10, nil
}

package procfs

import (
	"io"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DeletedSuffix is appended by the kernel to the path of a mapped file whose
// directory entry is gone (unlinked files, memfd, SysV shm, shared anon).
const DeletedSuffix = " (deleted)"

// VMA is one line of /proc/<pid>/maps:
//
//	start-end perms offset major:minor inode [padding path]
//
// Path is everything after the padding, unmodified except for the removal of
// DeletedSuffix. Notes on the kernel format (Linux 6.18):
//   - Path may contain spaces and a trailing space or '\r'; only a '\n' in a
//     file name is escaped, as the four bytes `\012` (a real `\012` in a
//     name is indistinguishable, so Path is left as printed).
//   - Anonymous private mappings have Path "" (the line ends "0 ").
//   - Pseudo paths: "[heap]", "[stack]", "[vdso]", "[vvar]",
//     "[vvar_vclock]", "[vsyscall]", "[anon:NAME]" and "[anon_shmem:NAME]"
//     (only with CONFIG_ANON_VMA_NAME, which the 6.18 test kernel lacks).
//   - Shared anonymous mappings show as "/dev/zero (deleted)" on device
//     00:01 with a shmem inode number; SysV shm as "/SYSV<key as %08x>
//     (deleted)" with the shmid as inode; memfd as "/memfd:NAME (deleted)".
//     All of these have Deleted set and Path without the suffix.
//   - A file literally named "x (deleted)" is indistinguishable from a
//     deleted "x"; callers needing certainty must stat map_files.
type VMA struct {
	Start, End uint64 // [Start, End) virtual addresses
	Perms      string // the four permission characters, e.g. "rw-p"
	Prot       int    // unix.PROT_READ|PROT_WRITE|PROT_EXEC derived from Perms
	Shared     bool   // Perms[3] == 's' (MAP_SHARED); 'p' is private
	Offset     uint64 // file offset in bytes (pgoff << PAGE_SHIFT)
	DevMajor   uint32
	DevMinor   uint32
	Inode      uint64
	Path       string // see type doc; without DeletedSuffix when Deleted
	Deleted    bool   // the printed path ended with DeletedSuffix
}

// Size returns End - Start.
func (v *VMA) Size() uint64 { return v.End - v.Start }

// ParseMaps parses the content of /proc/<pid>/maps. It returns the VMAs in
// file order (ascending addresses) or an error wrapping ErrMalformed that
// names the offending line. Empty input (zombies, kernel threads) yields an
// empty slice and no error.
func ParseMaps(r io.Reader) ([]VMA, error) {
	var out []VMA
	sc := lineScanner(r)
	n := 0
	for sc.Scan() {
		n++
		v, err := parseMapsLine(sc.Text())
		if err != nil {
			return nil, malformed("maps", n, "%v", err)
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		return nil, scanErr("maps", n, err)
	}
	return out, nil
}

// ReadMaps parses /proc/<pid>/maps.
func ReadMaps(pid int) ([]VMA, error) {
	return parseFile(PidPath(pid, "maps"), ParseMaps)
}

// nextField returns the next space-separated token of s and the remainder
// (starting at the separator). Leading spaces are skipped.
func nextField(s string) (tok, rest string) {
	s = strings.TrimLeft(s, " ")
	if i := strings.IndexByte(s, ' '); i >= 0 {
		return s[:i], s[i:]
	}
	return s, ""
}

// parseMapsLine parses one maps line (no trailing newline).
func parseMapsLine(line string) (VMA, error) {
	var v VMA
	rng, rest := nextField(line)
	perms, rest := nextField(rest)
	off, rest := nextField(rest)
	dev, rest := nextField(rest)
	ino, rest := nextField(rest)
	if ino == "" {
		return v, msgError("too few fields in " + strconv.Quote(line))
	}

	lo, hi, ok := strings.Cut(rng, "-")
	if !ok {
		return v, msgError("bad address range " + strconv.Quote(rng))
	}
	var err error
	if v.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
		return v, msgError("bad start address " + strconv.Quote(lo))
	}
	if v.End, err = strconv.ParseUint(hi, 16, 64); err != nil {
		return v, msgError("bad end address " + strconv.Quote(hi))
	}
	if v.End <= v.Start {
		return v, msgError("empty or inverted range " + strconv.Quote(rng))
	}

	if len(perms) != 4 ||
		(perms[0] != 'r' && perms[0] != '-') ||
		(perms[1] != 'w' && perms[1] != '-') ||
		(perms[2] != 'x' && perms[2] != '-') ||
		(perms[3] != 's' && perms[3] != 'p') {
		return v, msgError("bad permissions " + strconv.Quote(perms))
	}
	v.Perms = perms
	if perms[0] == 'r' {
		v.Prot |= unix.PROT_READ
	}
	if perms[1] == 'w' {
		v.Prot |= unix.PROT_WRITE
	}
	if perms[2] == 'x' {
		v.Prot |= unix.PROT_EXEC
	}
	v.Shared = perms[3] == 's'

	if v.Offset, err = strconv.ParseUint(off, 16, 64); err != nil {
		return v, msgError("bad offset " + strconv.Quote(off))
	}
	maj, min, ok := strings.Cut(dev, ":")
	if !ok {
		return v, msgError("bad device " + strconv.Quote(dev))
	}
	m, err1 := strconv.ParseUint(maj, 16, 32)
	n, err2 := strconv.ParseUint(min, 16, 32)
	if err1 != nil || err2 != nil {
		return v, msgError("bad device " + strconv.Quote(dev))
	}
	v.DevMajor, v.DevMinor = uint32(m), uint32(n)
	if v.Inode, err = strconv.ParseUint(ino, 10, 64); err != nil {
		return v, msgError("bad inode " + strconv.Quote(ino))
	}

	// The path follows the padding; it never starts with a space, but may
	// contain and end with spaces, so only the leading run is removed.
	path := strings.TrimLeft(rest, " ")
	if p, ok := strings.CutSuffix(path, DeletedSuffix); ok {
		path, v.Deleted = p, true
	}
	v.Path = path
	return v, nil
}

package procfs

import (
	"io"
	"strconv"
	"strings"
)

// OLargefile is O_LARGEFILE as fdinfo "flags:" shows it on x86-64
// (0100000). Note golang.org/x/sys/unix.O_LARGEFILE is 0 on amd64, so it
// cannot be used to mask this bit.
const OLargefile = 0o100000

// FdInfo is /proc/<pid>/fdinfo/<fd>. The four common lines (pos, flags,
// mnt_id, ino) come first; the rest depends on the file type. Examples seen on
// Linux 6.18 (see testdata/fdinfo_*.txt):
//
//	eventfd-count:                7       (%16llx: HEX, space-padded; 255 is "ff")
//	eventfd-id: 1
//	eventfd-semaphore: 0
//	clockid: 1                            (timerfd)
//	settime flags: 00                     (key contains a space)
//	it_value: (99, 999389434)
//	sigmask:	0000000000004200             (signalfd)
//	tfd:        5 events:       19 data:             1234  pos:0 ino:40f sdev:10
//	inotify wd:1 ino:3c4a3 sdev:fe00000 mask:100 ignored_mask:0 ...
//
// Anonymous-inode files (eventfd, timerfd, signalfd, epoll, inotify) all
// report the same anon_inodefs mnt_id and ino; memfd reports mnt_id 0 (the
// internal shm mount). Lines like "tfd:" (numbers after "events:" and
// "data:" are hex) and "inotify wd:" carry several key:value pairs and may
// repeat; they are stored under their text before the first ':' ("tfd",
// "inotify wd"), one slice element per line, and specialised parsers should
// work from Raw.
type FdInfo struct {
	Pos int64 // pos: file position
	// Flags is "flags:", printed in octal: the file's f_flags plus
	// O_CLOEXEC (02000000) taken from the fd table. open(2) forces
	// O_LARGEFILE (OLargefile) on 64-bit, so regular files show it too.
	Flags uint32
	MntID int    // mnt_id
	Ino   uint64 // ino: inode number, decimal

	// Fields holds every other line containing ':': key is the text before
	// the first ':', values (in order of appearance) are trimmed of
	// surrounding white space.
	Fields map[string][]string
	// Raw is the complete file content.
	Raw string
}

// Field returns the first value stored for key.
func (fi *FdInfo) Field(key string) (string, bool) {
	v := fi.Fields[key]
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// ParseFdInfo parses the content of an fdinfo file. pos, flags, mnt_id and
// ino are mandatory and must appear once; lines without ':' are only kept
// in Raw. Errors wrap ErrMalformed.
func ParseFdInfo(r io.Reader) (*FdInfo, error) {
	b, err := readSmall("fdinfo", r)
	if err != nil {
		return nil, err
	}
	fi := &FdInfo{Fields: map[string][]string{}, Raw: string(b)}
	seen := map[string]bool{}
	sc := lineScanner(strings.NewReader(fi.Raw))
	n := 0
	for sc.Scan() {
		n++
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		var perr error
		switch key {
		case "pos", "flags", "mnt_id", "ino":
			if seen[key] {
				return nil, malformed("fdinfo", n, "duplicate %q", key)
			}
			seen[key] = true
			switch key {
			case "pos":
				perr = setNumber(&fi.Pos, val, 10)
			case "flags":
				perr = setNumber(&fi.Flags, val, 8)
			case "mnt_id":
				perr = setNumber(&fi.MntID, val, 10)
			default:
				perr = setNumber(&fi.Ino, val, 10)
			}
		default:
			fi.Fields[key] = append(fi.Fields[key], val)
		}
		if perr != nil {
			return nil, malformed("fdinfo", n, "%s: %v", key, perr)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, scanErr("fdinfo", n, err)
	}
	for _, k := range []string{"pos", "flags", "mnt_id", "ino"} {
		if !seen[k] {
			return nil, malformed("fdinfo", 0, "missing %q line", k)
		}
	}
	return fi, nil
}

// ReadFdInfo parses /proc/<pid>/fdinfo/<fd>.
func ReadFdInfo(pid, fd int) (*FdInfo, error) {
	return parseFile(PidPath(pid, "fdinfo/"+strconv.Itoa(fd)), ParseFdInfo)
}

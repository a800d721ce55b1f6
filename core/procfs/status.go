package procfs

import (
	"io"
	"strconv"
	"strings"
)

// SigQueue is the "SigQ:" line: queued/limit of the owner's real UID.
type SigQueue struct {
	Queued, Limit uint64
}

// Status is /proc/<pid>/status (or /proc/<pid>/task/<tid>/status).
//
// Format notes (Linux 6.18):
//   - Name is escaped by the kernel: only '\\' is printed as `\\` and
//     '\n' as `\n` (a tab stays raw). ParseStatus undoes exactly these two
//     escapes, so Name equals the raw comm.
//   - Zombies lack Umask, THP_enabled and all Vm* lines; NS* lines need
//     CONFIG_PID_NS, Seccomp/Seccomp_filters need CONFIG_SECCOMP(_FILTER).
//     These are optional: check Has before trusting a zero value.
//   - In task/<tid>/status, Pid is the TID while Tgid is the process; the
//     signal masks SigPnd/SigBlk and Seccomp/NoNewPrivs are per thread,
//     ShdPnd/SigIgn/SigCgt are per process.
type Status struct {
	Name           string    // Name (unescaped comm)
	Umask          uint32    // Umask, octal (optional)
	State          byte      // State, first letter: R S D Z T t X I P
	Tgid           int       // Tgid
	Pid            int       // Pid (TID for task files)
	PPid           int       // PPid
	TracerPid      int       // TracerPid (optional)
	Uid            [4]uint32 // Uid: real, effective, saved set, filesystem
	Gid            [4]uint32 // Gid: real, effective, saved set, filesystem
	Groups         []uint32  // Groups: supplementary groups (may be empty)
	NStgid         []int     // NStgid, outermost pid namespace first (optional)
	NSpid          []int     // NSpid (optional)
	NSpgid         []int     // NSpgid (optional)
	NSsid          []int     // NSsid (optional)
	Threads        int       // Threads
	SigQ           SigQueue  // SigQ
	SigPnd         uint64    // SigPnd: thread-pending signals, bit n-1 = signal n
	ShdPnd         uint64    // ShdPnd: process-shared pending signals
	SigBlk         uint64    // SigBlk
	SigIgn         uint64    // SigIgn
	SigCgt         uint64    // SigCgt
	CapInh         uint64    // CapInh
	CapPrm         uint64    // CapPrm
	CapEff         uint64    // CapEff
	CapBnd         uint64    // CapBnd
	CapAmb         uint64    // CapAmb
	NoNewPrivs     bool      // NoNewPrivs
	Seccomp        int       // Seccomp: 0 disabled, 1 strict, 2 filter (optional)
	SeccompFilters int       // Seccomp_filters: number of attached filters (optional)
	THPEnabled     bool      // THP_enabled: false after PR_SET_THP_DISABLE (optional)

	// Other holds every line not parsed into a field above, key without
	// the colon, value with surrounding white space removed.
	Other map[string]string

	seen map[string]bool
}

// Has reports whether the line named key (as printed, e.g. "Umask",
// "NStgid", "Seccomp_filters", "VmRSS") was present.
func (s *Status) Has(key string) bool { return s.seen[key] }

// statusRequired are printed for every task, including zombies and
// kernel threads; ParseStatus fails if one is missing.
var statusRequired = []string{
	"Name", "State", "Tgid", "Pid", "PPid", "Uid", "Gid", "Groups",
	"Threads", "SigQ", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt",
	"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
}

// ParseStatus parses the content of a status file. Lines are "Key:\tvalue";
// the keys listed in the Status fields are parsed (errors wrap
// ErrMalformed), all others are kept in Other. Duplicate keys, lines
// without ':' and missing mandatory keys (see statusRequired) are errors.
func ParseStatus(r io.Reader) (*Status, error) {
	s := &Status{Other: map[string]string{}, seen: map[string]bool{}}
	sc := lineScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if line == "" {
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok || key == "" {
			return nil, malformed("status", n, "no \"key:\" in %q", line)
		}
		if s.seen[key] {
			return nil, malformed("status", n, "duplicate key %q", key)
		}
		s.seen[key] = true
		if err := s.set(key, val); err != nil {
			return nil, malformed("status", n, "%s: %v", key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, scanErr("status", n, err)
	}
	for _, k := range statusRequired {
		if !s.seen[k] {
			return nil, malformed("status", 0, "missing %q line", k)
		}
	}
	return s, nil
}

// ReadStatus parses /proc/<pid>/status.
func ReadStatus(pid int) (*Status, error) {
	return parseFile(PidPath(pid, "status"), ParseStatus)
}

// ReadTaskStatus parses /proc/<pid>/task/<tid>/status.
func ReadTaskStatus(pid, tid int) (*Status, error) {
	return parseFile(TaskPath(pid, tid, "status"), ParseStatus)
}

// set parses one value. raw is the text after the colon.
func (s *Status) set(key, raw string) error {
	val := strings.TrimSpace(raw)
	switch key {
	case "Name":
		// Exactly one tab separates key and value; the name itself may
		// start or end with white space.
		s.Name = unescapeName(strings.TrimPrefix(raw, "\t"))
		return nil
	case "State":
		if val == "" {
			return msgError("empty state")
		}
		s.State = val[0]
		return nil
	case "Umask":
		return setNumber(&s.Umask, val, 8)
	case "Tgid":
		return setNumber(&s.Tgid, val, 10)
	case "Pid":
		return setNumber(&s.Pid, val, 10)
	case "PPid":
		return setNumber(&s.PPid, val, 10)
	case "TracerPid":
		return setNumber(&s.TracerPid, val, 10)
	case "Uid", "Gid":
		f := strings.Fields(val)
		if len(f) != 4 {
			return msgError("want 4 ids, got " + strconv.Quote(val))
		}
		dst := &s.Uid
		if key == "Gid" {
			dst = &s.Gid
		}
		for i := range f {
			if err := setNumber(&dst[i], f[i], 10); err != nil {
				return err
			}
		}
		return nil
	case "Groups":
		f := strings.Fields(val)
		s.Groups = make([]uint32, len(f))
		for i := range f {
			if err := setNumber(&s.Groups[i], f[i], 10); err != nil {
				return err
			}
		}
		return nil
	case "NStgid", "NSpid", "NSpgid", "NSsid":
		f := strings.Fields(val)
		if len(f) == 0 {
			return msgError("empty id list")
		}
		ids := make([]int, len(f))
		for i := range f {
			if err := setNumber(&ids[i], f[i], 10); err != nil {
				return err
			}
		}
		switch key {
		case "NStgid":
			s.NStgid = ids
		case "NSpid":
			s.NSpid = ids
		case "NSpgid":
			s.NSpgid = ids
		default:
			s.NSsid = ids
		}
		return nil
	case "Threads":
		return setNumber(&s.Threads, val, 10)
	case "SigQ":
		q, l, ok := strings.Cut(val, "/")
		if !ok {
			return msgError("want queued/limit, got " + strconv.Quote(val))
		}
		if err := setNumber(&s.SigQ.Queued, q, 10); err != nil {
			return err
		}
		return setNumber(&s.SigQ.Limit, l, 10)
	case "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt",
		"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb":
		return setNumber(s.hexField(key), val, 16)
	case "NoNewPrivs":
		return setBool01(&s.NoNewPrivs, val)
	case "THP_enabled":
		return setBool01(&s.THPEnabled, val)
	case "Seccomp":
		return setNumber(&s.Seccomp, val, 10)
	case "Seccomp_filters":
		return setNumber(&s.SeccompFilters, val, 10)
	}
	s.Other[key] = val
	return nil
}

func (s *Status) hexField(key string) *uint64 {
	switch key {
	case "SigPnd":
		return &s.SigPnd
	case "ShdPnd":
		return &s.ShdPnd
	case "SigBlk":
		return &s.SigBlk
	case "SigIgn":
		return &s.SigIgn
	case "SigCgt":
		return &s.SigCgt
	case "CapInh":
		return &s.CapInh
	case "CapPrm":
		return &s.CapPrm
	case "CapEff":
		return &s.CapEff
	case "CapBnd":
		return &s.CapBnd
	default:
		return &s.CapAmb
	}
}

func setBool01(dst *bool, val string) error {
	switch val {
	case "0":
		*dst = false
	case "1":
		*dst = true
	default:
		return msgError("want 0 or 1, got " + strconv.Quote(val))
	}
	return nil
}

// unescapeName reverses the kernel's escaping of comm in status: `\\` is a
// backslash and `\n` a newline; nothing else is escaped.
func unescapeName(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			switch s[i+1] {
			case '\\':
				b.WriteByte('\\')
				i++
				continue
			case 'n':
				b.WriteByte('\n')
				i++
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

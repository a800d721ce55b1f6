package procfs

import (
	"io"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Limit is one resource limit row of /proc/<pid>/limits.
type Limit struct {
	Resource int    // unix.RLIMIT_* (0..15)
	Cur      uint64 // soft limit; "unlimited" is unix.RLIM_INFINITY
	Max      uint64 // hard limit; "unlimited" is unix.RLIM_INFINITY
}

// limitNames maps the row names of fs/proc/base.c lnames[] (indexed by
// RLIMIT_*) to the resource numbers.
var limitNames = []struct {
	name string
	res  int
}{
	{"Max cpu time", unix.RLIMIT_CPU},
	{"Max file size", unix.RLIMIT_FSIZE},
	{"Max data size", unix.RLIMIT_DATA},
	{"Max stack size", unix.RLIMIT_STACK},
	{"Max core file size", unix.RLIMIT_CORE},
	{"Max resident set", unix.RLIMIT_RSS},
	{"Max processes", unix.RLIMIT_NPROC},
	{"Max open files", unix.RLIMIT_NOFILE},
	{"Max locked memory", unix.RLIMIT_MEMLOCK},
	{"Max address space", unix.RLIMIT_AS},
	{"Max file locks", unix.RLIMIT_LOCKS},
	{"Max pending signals", unix.RLIMIT_SIGPENDING},
	{"Max msgqueue size", unix.RLIMIT_MSGQUEUE},
	{"Max nice priority", unix.RLIMIT_NICE},
	{"Max realtime priority", unix.RLIMIT_RTPRIO},
	{"Max realtime timeout", unix.RLIMIT_RTTIME},
}

// ParseLimits parses the content of /proc/<pid>/limits. The kernel prints
// fixed-width columns ("%-25s %-20s %-20s %-10s"): name, soft, hard and an
// optional unit ("Max nice priority" and "Max realtime priority" have an
// empty Units column, leaving only trailing spaces). The parser matches the
// known row names as prefixes rather than relying on the widths, so names
// with spaces are handled. The header line ("Limit ...") is required first;
// unknown or duplicate rows and non-numeric values are errors wrapping
// ErrMalformed. Rows are returned in file order (= resource order).
func ParseLimits(r io.Reader) ([]Limit, error) {
	var out []Limit
	seen := map[int]bool{}
	sc := lineScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if n == 1 {
			if !strings.HasPrefix(line, "Limit ") {
				return nil, malformed("limits", n, "missing header, got %q", line)
			}
			continue
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		res, rest := -1, ""
		for _, ln := range limitNames {
			if r, ok := strings.CutPrefix(line, ln.name+" "); ok {
				res, rest = ln.res, r
				break
			}
		}
		if res < 0 {
			return nil, malformed("limits", n, "unknown limit %q", line)
		}
		if seen[res] {
			return nil, malformed("limits", n, "duplicate limit %q", line)
		}
		seen[res] = true
		f := strings.Fields(rest)
		if len(f) != 2 && len(f) != 3 {
			return nil, malformed("limits", n, "want soft, hard [unit], got %q", rest)
		}
		l := Limit{Resource: res}
		var err error
		if l.Cur, err = parseRlim(f[0]); err != nil {
			return nil, malformed("limits", n, "soft limit: %v", err)
		}
		if l.Max, err = parseRlim(f[1]); err != nil {
			return nil, malformed("limits", n, "hard limit: %v", err)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return nil, scanErr("limits", n, err)
	}
	if n == 0 {
		return nil, malformed("limits", 0, "empty file")
	}
	return out, nil
}

// ReadLimits parses /proc/<pid>/limits.
func ReadLimits(pid int) ([]Limit, error) {
	return parseFile(PidPath(pid, "limits"), ParseLimits)
}

func parseRlim(s string) (uint64, error) {
	if s == "unlimited" {
		return unix.RLIM_INFINITY, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, msgError("bad value " + strconv.Quote(s))
	}
	return v, nil
}

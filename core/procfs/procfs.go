// Package procfs parses the /proc files that the dumper needs.
//
// The package follows the style of moby/sys mountinfo: every file format
// has a pure parser that takes an io.Reader (ParseMaps, ParseSmaps,
// ParseStat, ParseStatus, ParseFdInfo, ParseLimits, ParseTimers,
// ParsePersonality) or a byte slice (DecodeAuxv), plus a thin wrapper that
// opens the file under /proc/<pid>/ (or /proc/<pid>/task/<tid>/) and calls
// the parser.
//
// Error contract:
//   - Parsers never panic. Malformed input yields an error that wraps
//     ErrMalformed (test with errors.Is) and names the file kind and, where
//     it applies, the 1-based line number.
//   - Wrappers wrap every error with %w and name the full path, e.g.
//     "procfs: /proc/42/maps: maps line 3: malformed: ...". Open and read
//     errors keep their *fs.PathError / syscall.Errno chain, so
//     errors.Is(err, fs.ErrNotExist) or errors.Is(err, unix.ESRCH) tell
//     that the process has gone away.
//
// The format details documented on each type were checked against Linux
// 6.18 (x86-64); the testdata directory holds text captured there.
package procfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// ErrMalformed is wrapped by every error caused by unexpected file content.
var ErrMalformed = errors.New("malformed")

// Mount is the procfs mount point used by the wrappers.
const Mount = "/proc"

// maxLine bounds a single line; longer lines are reported as malformed
// instead of growing without limit (PATH_MAX lines in maps are 4 KiB).
const maxLine = 1 << 20

// maxSmallFile bounds files that are read whole (stat, personality, ...).
const maxSmallFile = 1 << 20

// PidPath returns /proc/<pid>/<name>.
func PidPath(pid int, name string) string {
	return Mount + "/" + strconv.Itoa(pid) + "/" + name
}

// TaskPath returns /proc/<pid>/task/<tid>/<name>.
func TaskPath(pid, tid int, name string) string {
	return Mount + "/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/" + name
}

// malformed builds an error wrapping ErrMalformed. line <= 0 omits the line.
func malformed(file string, line int, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if line > 0 {
		return fmt.Errorf("%s line %d: %w: %s", file, line, ErrMalformed, msg)
	}
	return fmt.Errorf("%s: %w: %s", file, ErrMalformed, msg)
}

// msgError is a plain message; parsers wrap it with malformed().
type msgError string

func (e msgError) Error() string { return string(e) }

// parseFile opens path, runs parse on it and wraps errors with the path.
func parseFile[T any](path string, parse func(io.Reader) (T, error)) (T, error) {
	var zero T
	f, err := os.Open(path)
	if err != nil {
		return zero, fmt.Errorf("procfs: %w", err)
	}
	defer f.Close()
	v, err := parse(f)
	if err != nil {
		return zero, fmt.Errorf("procfs: %s: %w", path, err)
	}
	return v, nil
}

// readSmall reads all of r, failing if it exceeds maxSmallFile bytes.
func readSmall(file string, r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxSmallFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(b) > maxSmallFile {
		return nil, malformed(file, 0, "longer than %d bytes", maxSmallFile)
	}
	return b, nil
}

// lineScanner returns a scanner splitting on '\n' only. Unlike
// bufio.ScanLines it keeps a trailing '\r', which may be part of a path.
func lineScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if atEOF && len(data) == 0 {
			return 0, nil, nil
		}
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			return i + 1, data[:i], nil
		}
		if atEOF {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	return sc
}

// scanErr converts a scanner error into a package error.
func scanErr(file string, line int, err error) error {
	if errors.Is(err, bufio.ErrTooLong) {
		return malformed(file, line+1, "line longer than %d bytes", maxLine)
	}
	return fmt.Errorf("%s: %w", file, err)
}

package procfs

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Tasks returns the thread ids in /proc/<pid>/task, sorted ascending. The
// list is a snapshot: threads may be created or exit concurrently unless
// the process is frozen or seized.
func Tasks(pid int) ([]int, error) {
	return listNumbers(PidPath(pid, "task"))
}

// Fds returns the open file descriptor numbers in /proc/<pid>/fd, sorted
// ascending. Reading /proc/self/fd also lists the directory's own fd.
func Fds(pid int) ([]int, error) {
	return listNumbers(PidPath(pid, "fd"))
}

// listNumbers reads a directory whose entries are all decimal numbers.
func listNumbers(dir string) ([]int, error) {
	names, err := readDirNames(dir)
	if err != nil {
		return nil, fmt.Errorf("procfs: %w", err)
	}
	out := make([]int, 0, len(names))
	for _, name := range names {
		n, err := strconv.Atoi(name)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("procfs: %s: %w", dir, malformed("directory", 0, "non-numeric entry %q", name))
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// FdLink returns the target of /proc/<pid>/fd/<fd>, e.g. "/etc/passwd",
// "pipe:[1234]", "anon_inode:[eventfd]" or "/tmp/x (deleted)".
func FdLink(pid, fd int) (string, error) {
	return readLink(PidPath(pid, "fd/"+strconv.Itoa(fd)))
}

// Cwd returns the target of /proc/<pid>/cwd.
func Cwd(pid int) (string, error) { return readLink(PidPath(pid, "cwd")) }

// Root returns the target of /proc/<pid>/root.
func Root(pid int) (string, error) { return readLink(PidPath(pid, "root")) }

// Exe returns the target of /proc/<pid>/exe.
func Exe(pid int) (string, error) { return readLink(PidPath(pid, "exe")) }

func readLink(path string) (string, error) {
	s, err := os.Readlink(path)
	if err != nil {
		return "", fmt.Errorf("procfs: %w", err)
	}
	return s, nil
}

// ParsePersonality parses /proc/<pid>/personality: the persona as "%08x\n".
func ParsePersonality(r io.Reader) (uint32, error) {
	b, err := readSmall("personality", r)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSuffix(string(b), "\n")
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil || s == "" {
		return 0, malformed("personality", 0, "bad value %q", s)
	}
	return uint32(v), nil
}

// Personality returns the persona (personality(2) value) of pid. Reading
// it requires PTRACE_MODE_ATTACH on the target.
func Personality(pid int) (uint32, error) {
	return parseFile(PidPath(pid, "personality"), ParsePersonality)
}

// parseComm returns the content of a comm file without its one trailing
// newline. Comm is raw: it may contain any byte except NUL, even '\n'.
func parseComm(r io.Reader) (string, error) {
	b, err := readSmall("comm", r)
	if err != nil {
		return "", err
	}
	s, ok := strings.CutSuffix(string(b), "\n")
	if !ok {
		return "", malformed("comm", 0, "no trailing newline in %q", b)
	}
	return s, nil
}

// Comm returns /proc/<pid>/task/<tid>/comm (use tid == pid for the thread
// group leader) without the trailing newline: up to 15 bytes, raw.
func Comm(pid, tid int) (string, error) {
	return parseFile(TaskPath(pid, tid, "comm"), parseComm)
}

// Children lists the children of every thread of pid
// (/proc/PID/task/TID/children; exact only while pid cannot fork or reap,
// e.g. frozen or seized).
func Children(pid int) ([]int, error) {
	tids, err := Tasks(pid)
	if err != nil {
		return nil, fmt.Errorf("pid %d: threads: %w", pid, err)
	}
	var out []int
	for _, tid := range tids {
		b, err := os.ReadFile(TaskPath(pid, tid, "children"))
		if err != nil {
			return nil, fmt.Errorf("pid %d: children: %w", pid, err)
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

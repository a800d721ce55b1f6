package main

import (
	"fmt"
	"regexp"
	"strconv"

	"golang.org/x/sys/unix"
)

// --inherit-fd fd[N]:KEY (CRIU's syntax, used by runc too): ctr-cr's own fd
// N replaces, in the restored tree, the file of the image named KEY, whose
// other side was outside the dump. Supported keys: pipe:[INO] (an external
// pipe) and socket:[INO] (a unix socket whose peer was outside, dumped
// with --ext-unix-sk); "ctr-cr show" lists them. CRIU's other keys are
// recognised and refused by name.

var (
	inheritArg  = regexp.MustCompile(`^fd\[([0-9]+)\]:(.+)$`)
	inheritPipe = regexp.MustCompile(`^pipe:\[([0-9]+)\]$`)
	inheritSock = regexp.MustCompile(`^socket:\[([0-9]+)\]$`)
	inheritTty  = regexp.MustCompile(`^tty\[[0-9a-fA-F]+:[0-9a-fA-F]+\]$`)
)

// inheritValue is the repeatable --inherit-fd option: it fills m (key ->
// fd) as the command line is parsed.
type inheritValue struct{ m map[string]int }

func (v inheritValue) String() string { return "" }

func (v inheritValue) Set(s string) error {
	fd, key, err := parseInheritFd(s)
	if err != nil {
		return err
	}
	if _, dup := v.m[key]; dup {
		return fmt.Errorf("%s given twice", key)
	}
	v.m[key] = fd
	return nil
}

// parseInheritFd parses fd[N]:KEY and checks that N is an open fd of ours
// and KEY a supported key.
func parseInheritFd(s string) (int, string, error) {
	m := inheritArg.FindStringSubmatch(s)
	if m == nil {
		return -1, "", fmt.Errorf("%q: want fd[N]:KEY, e.g. fd[3]:pipe:[12345]", s)
	}
	fd, err := strconv.Atoi(m[1])
	if err != nil || fd > 1<<20 {
		return -1, "", fmt.Errorf("%q: bad fd number", s)
	}
	key := m[2]
	switch {
	case inheritPipe.MatchString(key):
	case inheritSock.MatchString(key):
	case inheritTty.MatchString(key):
		// the terminal of a tree dumped with --shell-job (LXC's console)
	default:
		return -1, "", fmt.Errorf("%q: unsupported key %q, only pipe:[INO], socket:[INO] and tty[RDEV:DEV]", s, key)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return -1, "", fmt.Errorf("%q: fd %d: %w", s, fd, err)
	}
	return fd, key, nil
}

// inheritedTerminal takes the tty[RDEV:DEV] entry out of inherit, if any,
// and returns its fd: the terminal that replaces the image's external one
// (a shell job's, LXC's console), as --shell-job does with ctr-cr's own;
// -1 without one.
func inheritedTerminal(inherit map[string]int) int {
	for k, fd := range inherit {
		if inheritTty.MatchString(k) {
			delete(inherit, k)
			return fd
		}
	}
	return -1
}

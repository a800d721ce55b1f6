package main

import (
	"strings"
	"testing"
)

// TestParseInheritFd: CRIU's fd[N]:KEY syntax; pipe, socket and tty keys
// (the latter the terminal of a shell job, LXC's console) accepted, the
// other CRIU keys refused by name, bad syntax and closed fds refused.
func TestParseInheritFd(t *testing.T) {
	fd, key, err := parseInheritFd("fd[2]:pipe:[12345]")
	if err != nil || fd != 2 || key != "pipe:[12345]" {
		t.Fatalf("pipe key: %d %q %v", fd, key, err)
	}
	fd, key, err = parseInheritFd("fd[2]:socket:[7]")
	if err != nil || fd != 2 || key != "socket:[7]" {
		t.Fatalf("socket key: %d %q %v", fd, key, err)
	}
	for arg, want := range map[string]string{
		"fd[2]:/var/log/x.log": "unsupported key",
		"2:pipe:[1]":           "want fd[N]:KEY",
		"fd[x]:pipe:[1]":       "want fd[N]:KEY",
		"fd[999999]:pipe:[1]":  "fd 999999",
	} {
		if _, _, err := parseInheritFd(arg); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error naming %q", arg, err, want)
		}
	}
}

// TestInheritedTerminal: a tty[RDEV:DEV] key is the restore's terminal and
// leaves the other inherited fds alone.
func TestInheritedTerminal(t *testing.T) {
	fd, key, err := parseInheritFd("fd[2]:tty[8801:d]")
	if err != nil || fd != 2 || key != "tty[8801:d]" {
		t.Fatalf("tty key: %d %q %v", fd, key, err)
	}
	m := map[string]int{key: fd, "pipe:[5]": 1}
	if got := inheritedTerminal(m); got != 2 || len(m) != 1 || m["pipe:[5]"] != 1 {
		t.Fatalf("inheritedTerminal: %d, left %v", got, m)
	}
	if got := inheritedTerminal(m); got != -1 {
		t.Fatalf("no tty: %d", got)
	}
}

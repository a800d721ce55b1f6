package tests

// Process helpers of the harness: waiting for a case to be ready, gone or
// back, reading its output, listing threads, sessions and descendants,
// and reaping.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ---------------------------------------------------------------------------
// Process helpers.

// waitReady waits until the file out has a line "ready". It fails early when
// pid (a child of ours) exits, reaping it.
func waitReady(t *testing.T, pid int, out string, timeout time.Duration) error {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(out); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if l == "ready" {
					return nil
				}
			}
		}
		var ws unix.WaitStatus
		if wpid, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); wpid == pid {
			return fmt.Errorf("case exited before ready: %s", describeStatus(syscall.WaitStatus(ws)))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no ready line within %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lastLine returns the last non-empty line of the file at path.
func lastLine(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return lines[len(lines)-1]
}

// killAndReap sends SIGKILL to pid and reaps it if it is our child (else
// waits briefly for it to disappear). Only call it with a pid this test
// started.
func killAndReap(pid int) {
	if pid <= 0 {
		return
	}
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(pid, 5*time.Second)
}

// waitChild waits up to timeout for our child pid to exit and reaps it.
func waitChild(pid int, timeout time.Duration) (syscall.WaitStatus, error) {
	deadline := time.Now().Add(timeout)
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if err != nil {
			return 0, fmt.Errorf("wait4 %d: %v", pid, err)
		}
		if wpid == pid {
			return syscall.WaitStatus(ws), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("pid %d still running after %v", pid, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitGone waits until pid is gone: reaped by us if it is our child,
// otherwise until /proc/pid disappears (its parent reaped it).
func waitGone(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if wpid == pid {
			return nil
		}
		if errors.Is(err, unix.ECHILD) {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still present after %v (state %s)", pid, timeout, procState(pid))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFile waits until path exists, giving up early when abort is closed.
func waitFile(path string, timeout time.Duration, abort <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-abort:
			return fmt.Errorf("ctr-cr restore exited before writing %s", path)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not written after %v", path, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitBack waits until pid exists (not a zombie) with at least the threads
// tids (a Go runtime may start more threads once it runs again). It gives up
// early when abort is closed (the restorer exited).
func waitBack(pid int, tids []int, timeout time.Duration, abort <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	var got []int
	var err error
	for {
		if st := procState(pid); st != "" && st != "Z" && st != "X" {
			got, err = listTids(pid)
			if err == nil && containsAll(got, tids) {
				return nil
			}
		}
		select {
		case <-abort:
			return fmt.Errorf("ctr-cr restore exited before pid %d was back (state %q, tids %v, want %v)",
				pid, procState(pid), got, tids)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d not back after %v: state %q, tids %v (%v), want tids %v",
				pid, timeout, procState(pid), got, err, tids)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func containsAll(have, want []int) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// listTids returns the sorted thread ids of pid.
func listTids(pid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	var tids []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	slices.Sort(tids)
	return tids, nil
}

// procState returns the one-letter state of pid from /proc/pid/stat, or ""
// when it does not exist.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return ""
	}
	return string(b[i+2])
}

// sessionProcs returns the live processes of session sid (a case runs in
// its own session, so these are the case and what it started).
func sessionProcs(sid int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		// After the comm: state ppid pgrp session ...
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 3 && f[3] == strconv.Itoa(sid) && f[0] != "Z" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// isCase reports whether the live process pid is the case running in dir
// (its cwd or its command line is under dir), so that cleanup never kills a
// recycled pid.
func isCase(pid int, dir string) bool {
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil {
		if cwd == dir || strings.HasPrefix(cwd, dir+"/") {
			return true
		}
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(cmdline, []byte(dir))
}

func describeStatus(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("signal %v", ws.Signal())
	default:
		return fmt.Sprintf("wait status %#x", uint32(ws))
	}
}

// descendants lists the pids of every descendant of pid (children of all
// its threads, recursively).
func descendants(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, tk := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, tk.Name()))
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
				out = append(out, descendants(c)...)
			}
		}
	}
	return out
}

// reapTree waits until the dumped (and killed) descendants are gone: killed
// together with their parent, they are reparented to us, the subreaper, and
// must be reaped here before their pids can be restored.
func reapTree(pids []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for {
			var ws unix.WaitStatus
			wpid, _ := unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
			if wpid == pid {
				break
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("descendant %d still present after %v (state %s)", pid, timeout, procState(pid))
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	return nil
}

// head returns the first n lines of the file at path (a crash report's
// reason is at its top).
func head(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// StatFields returns the fields of /proc/PID/stat after the command (comm
// may hold spaces and parentheses, so the split is after its last ')'):
// f[0] is field 3 of proc(5), the state; field n is f[n-3].
func StatFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return nil, fmt.Errorf("pid %d: bad stat %q", pid, b)
	}
	return strings.Fields(string(b[i+2:])), nil
}

// ProcState returns the one-letter state of pid from /proc/pid/stat, or ""
// when it does not exist.
func ProcState(pid int) string {
	f, err := StatFields(pid)
	if err != nil || len(f) == 0 {
		return ""
	}
	return f[0][:1]
}

// WaitGone waits until pid is gone: reaped by us if it is our child,
// otherwise until /proc/pid disappears (its parent reaped it). A zombie
// still holds its pid, so it is not gone yet.
func WaitGone(pid int, timeout time.Duration) error {
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
			return fmt.Errorf("pid %d still present after %v (state %s)", pid, timeout, ProcState(pid))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitExited waits until pid, which is not our child, is gone or a
// zombie: it has exited and its parent, not us, reaps it.
func WaitExited(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if st := ProcState(pid); st == "" || st == "Z" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still running %v after the checkpoint", pid, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// CopyDir copies the regular files of src into a new directory dst (an
// image directory, to be edited without touching the original); any other
// kind of file is an error.
func CopyDir(src, dst string) error {
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			return fmt.Errorf("%s/%s: not a regular file", src, e.Name())
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// copyFile copies src into dst, which must not exist yet.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

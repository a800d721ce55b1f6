package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// freezer freezes and thaws one cgroup directory: cgroup v1's freezer
// (freezer.state) or cgroup v2's cgroup.freeze, whichever the directory
// has. It serves `dump --freeze-cgroup` (the container layer uses the
// cgroup package).
type freezer struct {
	dir string
	v1  bool
}

func newFreezer(dir string) (*freezer, error) {
	if _, err := os.Stat(filepath.Join(dir, "freezer.state")); err == nil {
		return &freezer{dir: dir, v1: true}, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.freeze")); err == nil {
		return &freezer{dir: dir}, nil
	}
	return nil, fmt.Errorf("%s: neither a v1 freezer (freezer.state) nor a cgroup v2 directory (cgroup.freeze)", dir)
}

// Freeze freezes the cgroup and waits until every task in it is frozen.
func (f *freezer) Freeze() error {
	if f.v1 {
		return f.set("freezer.state", "FROZEN", func() (bool, error) {
			b, err := os.ReadFile(filepath.Join(f.dir, "freezer.state"))
			return strings.TrimSpace(string(b)) == "FROZEN", err
		})
	}
	return f.set("cgroup.freeze", "1", func() (bool, error) {
		b, err := os.ReadFile(filepath.Join(f.dir, "cgroup.events"))
		return strings.Contains(string(b), "frozen 1"), err
	})
}

// Thaw thaws the cgroup.
func (f *freezer) Thaw() error {
	name, v := "cgroup.freeze", "0"
	if f.v1 {
		name, v = "freezer.state", "THAWED"
	}
	if err := os.WriteFile(filepath.Join(f.dir, name), []byte(v), 0); err != nil {
		return fmt.Errorf("thaw %s: %w", f.dir, err)
	}
	return nil
}

func (f *freezer) set(name, v string, done func() (bool, error)) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		// v1 may stay FREEZING while a task is busy in the kernel: write
		// again until it settles
		if err := os.WriteFile(filepath.Join(f.dir, name), []byte(v), 0); err != nil {
			return fmt.Errorf("freeze %s: %w", f.dir, err)
		}
		ok, err := done()
		if err != nil {
			return fmt.Errorf("freeze %s: %w", f.dir, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			f.Thaw()
			return fmt.Errorf("freeze %s: %w", f.dir, errors.New("not frozen after 10s"))
		}
		time.Sleep(time.Millisecond)
	}
}

package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/linux"
)

// Create makes the cgroup at paths in every hierarchy named (v1 controllers
// mounted together share one directory) and returns it. Missing ancestors
// are created too; in the v1 cpuset hierarchy every new directory gets its
// parent's cpuset.cpus and cpuset.mems, without which no task could join.
// The leaf must not exist yet in any hierarchy (fs.ErrExist): use Open for a
// cgroup someone else made (e.g. runc). On error, the directories Create made
// are removed again. For the unified hierarchy, each of
// paths.UnifiedControllers missing from an ancestor's cgroup.subtree_control
// (from the hierarchy root down to the new cgroup's parent) is enabled
// there, as runc does; a controller an ancestor does not offer is an error
// wrapping ErrNoController. Remove does not disable them again.
func Create(p Paths) (*Cgroup, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	mounts, err := selfMounts()
	if err != nil {
		return nil, err
	}
	c, err := resolve(mounts, p, true)
	if err != nil {
		return nil, err
	}
	var made []string // in creation order
	fail := func(err error) (*Cgroup, error) {
		for i := len(made) - 1; i >= 0; i-- {
			_ = rmdir(made[i])
		}
		return nil, err
	}
	cpuset := c.v1["cpuset"]
	for _, dir := range c.dirs() {
		if _, err := os.Lstat(dir); err == nil {
			return fail(fmt.Errorf("cgroup %s: create: %w", dir, fs.ErrExist))
		}
		// Ancestors from the top down, so the cpuset copy sees the
		// parent's values.
		var todo []string
		for d := dir; ; d = filepath.Dir(d) {
			if _, err := os.Lstat(d); err == nil || d == "/" {
				break
			}
			todo = append(todo, d)
		}
		for i := len(todo) - 1; i >= 0; i-- {
			d := todo[i]
			if err := os.Mkdir(d, 0o755); err != nil {
				return fail(fmt.Errorf("cgroup %s: create: %w", d, err))
			}
			made = append(made, d)
			if cpuset != "" && dir == cpuset {
				if err := copyCpuset(d); err != nil {
					return fail(err)
				}
			}
		}
	}
	if c.unified != "" && len(p.UnifiedControllers) > 0 {
		if err := enableControllers(mounts, p.Unified, c.unified, p.UnifiedControllers); err != nil {
			return fail(err)
		}
	}
	return c, nil
}

// enableControllers makes ctrls available in dir (the unified directory of
// path) by enabling them in each ancestor's cgroup.subtree_control, top down.
func enableControllers(mounts []Mount, path, dir string, ctrls []string) error {
	root, _ := dirFor(mounts, true, "", "/")
	if root == "" {
		// A mount of a subtree: start at its mount point.
		for _, m := range mounts {
			if m.V2 && strings.HasPrefix(dir, m.Point+"/") {
				root = m.Point
			}
		}
	}
	if root == "" || !strings.HasPrefix(dir, root+"/") {
		return nil // the mount root itself: nothing above to change
	}
	var chain []string
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		chain = append(chain, d)
		if d == root || d == "/" {
			break
		}
	}
	for i := len(chain) - 1; i >= 0; i-- {
		d := chain[i]
		avail, err := readString(d, "cgroup.controllers")
		if err != nil {
			return fmt.Errorf("cgroup %s: create %s: read cgroup.controllers: %w", d, path, err)
		}
		enabled, err := readString(d, "cgroup.subtree_control")
		if err != nil {
			return fmt.Errorf("cgroup %s: create %s: read cgroup.subtree_control: %w", d, path, err)
		}
		var add []string
		for _, c := range ctrls {
			if hasOption(strings.Fields(enabled), c) {
				continue
			}
			if !hasOption(strings.Fields(avail), c) {
				return fmt.Errorf("cgroup %s: create %s: controller %s not offered: %w", d, path, c, ErrNoController)
			}
			add = append(add, "+"+c)
		}
		if len(add) > 0 {
			if err := writeString(d, "cgroup.subtree_control", strings.Join(add, " ")); err != nil {
				return fmt.Errorf("cgroup %s: create %s: enable %v: %w", d, path, add, err)
			}
		}
	}
	return nil
}

// copyCpuset fills an empty cpuset.cpus/mems of dir from its parent.
func copyCpuset(dir string) error {
	parent := filepath.Dir(dir)
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := readString(dir, f)
		if err != nil {
			return fmt.Errorf("cgroup %s: create: read %s: %w", dir, f, err)
		}
		if cur != "" {
			continue
		}
		v, err := readString(parent, f)
		if err != nil {
			return fmt.Errorf("cgroup %s: create: read %s: %w", parent, f, err)
		}
		if err := writeString(dir, f, v); err != nil {
			return fmt.Errorf("cgroup %s: create: write %s=%s: %w", dir, f, v, err)
		}
	}
	return nil
}

// Add moves process pid (all its threads) into the cgroup in every
// hierarchy it has.
func (c *Cgroup) Add(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("cgroup %v: add pid %d: invalid pid", c.paths, pid)
	}
	for _, d := range c.dirs() {
		if err := writeString(d, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("cgroup %s: add pid %d: %w", d, pid, err)
		}
	}
	return nil
}

// Procs returns the pids directly in the cgroup (the freezer hierarchy's, or
// the first one's), sorted.
func (c *Cgroup) Procs() ([]int, error) {
	dir := c.v1["freezer"]
	if dir == "" {
		if ds := c.dirs(); len(ds) > 0 {
			dir = ds[0]
		}
	}
	return procs(dir)
}

func procs(dir string) ([]int, error) {
	s, err := readString(dir, "cgroup.procs")
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: read cgroup.procs: %w", dir, err)
	}
	var out []int
	for _, f := range strings.Fields(s) {
		p, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("cgroup %s: read cgroup.procs: bad pid %q", dir, f)
		}
		out = append(out, p)
	}
	sort.Ints(out)
	return out, nil
}

// Remove removes the cgroup's directory and its descendants (leaves first)
// in every hierarchy. It never removes a hierarchy root (path "/") nor any
// ancestor. Directories already gone are fine, so Remove is idempotent and
// fits failure paths. A cgroup that still has processes is left in place
// and the error wraps ErrHasProcesses with the pids; Remove still tries the
// other hierarchies and returns all errors joined.
func (c *Cgroup) Remove() error {
	roots := map[string]bool{}
	for ctrl, path := range c.paths.V1 {
		if path == "/" {
			roots[c.v1[ctrl]] = true
		}
	}
	if c.paths.Unified == "/" {
		roots[c.unified] = true
	}
	var errs []error
	for _, d := range c.dirs() {
		if roots[d] {
			continue
		}
		if err := removeTree(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeTree(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cgroup %s: remove: %w", dir, err)
	}
	var errs []error
	for _, e := range ents {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if ps, err := procs(dir); err == nil && len(ps) > 0 {
		return fmt.Errorf("cgroup %s: remove: %w: pids %v", dir, ErrHasProcesses, ps)
	}
	if err := rmdir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cgroup %s: remove: %w", dir, err)
	}
	return nil
}

// rmdir removes one cgroup directory, retrying EBUSY for up to about a
// second (a cgroup whose last task just exited can be busy briefly); EINTR
// is retried by internal/linux.
func rmdir(dir string) error {
	delay := time.Millisecond
	for deadline := time.Now().Add(time.Second); ; {
		err := linux.Rmdir(dir)
		if errors.Is(err, unix.EBUSY) && time.Now().Before(deadline) {
			time.Sleep(delay)
			if delay < 100*time.Millisecond {
				delay *= 2
			}
			continue
		}
		return err
	}
}

package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultFreezeTimeout bounds Freeze when its context has no deadline, and
// every Thaw.
const DefaultFreezeTimeout = 10 * time.Second

// freezer returns the directory and kind of the freezer Freeze uses: the v1
// freezer hierarchy when the cgroup is in one, else the unified hierarchy.
func (c *Cgroup) freezer() (dir string, v1 bool, err error) {
	if d := c.v1["freezer"]; d != "" {
		return d, true, nil
	}
	if c.unified != "" {
		return c.unified, false, nil
	}
	return "", false, fmt.Errorf("cgroup %v: freeze: no v1 freezer and no unified hierarchy: %w", c.paths, ErrNoController)
}

// Freeze freezes every task of the cgroup (and of its descendants) and
// returns once the kernel reports the cgroup frozen: v1 writes FROZEN to
// freezer.state and polls until it reads FROZEN (it reads FREEZING while a
// task is still running, e.g. in an uninterruptible sleep); v2 writes 1 to
// cgroup.freeze and polls cgroup.events until "frozen 1". The wait ends at
// ctx's deadline, or after DefaultFreezeTimeout when ctx has none; on
// timeout or cancellation the cgroup is thawed again and the error wraps
// ctx.Err() (context.DeadlineExceeded for the timeout).
func (c *Cgroup) Freeze(ctx context.Context) error {
	dir, v1, err := c.freezer()
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultFreezeTimeout)
		defer cancel()
	}
	if err := setFrozen(ctx, dir, v1, true); err != nil {
		// Leave the tasks running as they were.
		if terr := c.Thaw(); terr != nil {
			return fmt.Errorf("%w (thaw after failed freeze: %v)", err, terr)
		}
		return err
	}
	return nil
}

// Thaw thaws the cgroup's freezer (the one Freeze uses) and waits until the
// kernel reports it thawed, for at most DefaultFreezeTimeout. It is meant for
// failure paths: it takes no context, is idempotent and works whatever state
// a failed Freeze left. A cgroup whose ancestor is frozen stays frozen and
// Thaw then times out.
func (c *Cgroup) Thaw() error {
	dir, v1, err := c.freezer()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultFreezeTimeout)
	defer cancel()
	return setFrozen(ctx, dir, v1, false)
}

// Frozen tells whether the kernel reports the cgroup completely frozen (v1
// FREEZING counts as not frozen).
func (c *Cgroup) Frozen() (bool, error) {
	dir, v1, err := c.freezer()
	if err != nil {
		return false, err
	}
	return readFrozen(dir, v1)
}

// Thawed tells whether the cgroup's freezer is neither frozen nor asked to
// freeze: v1 freezer.state THAWED (FREEZING is a pause under way), v2
// cgroup.freeze 0 (the request; cgroup.events says "frozen 0" until every
// task has stopped). A caller that takes a cgroup for running on its own
// (without asking the runtime) must see Thawed, not just !Frozen.
func (c *Cgroup) Thawed() (bool, error) {
	dir, v1, err := c.freezer()
	if err != nil {
		return false, err
	}
	if v1 {
		s, err := readString(dir, "freezer.state")
		if err != nil {
			return false, fmt.Errorf("cgroup %s: read freezer.state: %w", dir, err)
		}
		return s == "THAWED", nil
	}
	s, err := readString(dir, "cgroup.freeze")
	if err != nil {
		return false, fmt.Errorf("cgroup %s: read cgroup.freeze: %w", dir, err)
	}
	if s != "0" {
		return false, nil
	}
	frozen, err := readFrozen(dir, false)
	return err == nil && !frozen, err
}

func readFrozen(dir string, v1 bool) (bool, error) {
	if v1 {
		s, err := readString(dir, "freezer.state")
		if err != nil {
			return false, fmt.Errorf("cgroup %s: read freezer.state: %w", dir, err)
		}
		return s == "FROZEN", nil
	}
	s, err := readString(dir, "cgroup.events")
	if err != nil {
		return false, fmt.Errorf("cgroup %s: read cgroup.events: %w", dir, err)
	}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == "frozen" {
			return v == "1", nil
		}
	}
	return false, fmt.Errorf("cgroup %s: cgroup.events has no frozen key (kernel < 5.2?): %w", dir, ErrNoController)
}

func setFrozen(ctx context.Context, dir string, v1, frozen bool) error {
	op, file, val := "thaw", "cgroup.freeze", "0"
	if v1 {
		file, val = "freezer.state", "THAWED"
	}
	if frozen {
		op, val = "freeze", "1"
		if v1 {
			val = "FROZEN"
		}
	}
	delay := 50 * time.Microsecond
	for {
		// v1: writing FROZEN again retries freezing tasks that were
		// not frozen by the previous attempt (FREEZING).
		if err := writeString(dir, file, val); err != nil {
			return fmt.Errorf("cgroup %s: %s: write %s: %w", dir, op, file, err)
		}
		got, err := readFrozen(dir, v1)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if got == frozen {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("cgroup %s: %s: state did not change: %w", dir, op, ctx.Err())
		case <-t.C:
		}
		if delay < 10*time.Millisecond {
			delay *= 2
		}
	}
}

// Kill sends SIGKILL to every process in the cgroup and its descendants, in
// the hierarchy Freeze uses. v2 writes 1 to cgroup.kill when the kernel has
// it (5.14+); otherwise (v1, or older v2) the cgroup is frozen so nothing
// can fork away, each listed pid gets SIGKILL and the cgroup is thawed so
// the signals are delivered. A frozen cgroup is fine; Kill leaves it
// thawed. Kill does not wait
// for the processes to exit or be reaped (their parent reaps them).
func (c *Cgroup) Kill() error {
	dir, v1, err := c.freezer()
	if err != nil {
		return err
	}
	if !v1 {
		err := writeString(dir, "cgroup.kill", "1")
		if err == nil {
			// Killed tasks die even when frozen; leave the
			// cgroup thawed like the v1 path does.
			return c.Thaw()
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cgroup %s: kill: write cgroup.kill: %w", dir, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultFreezeTimeout)
	defer cancel()
	ferr := setFrozen(ctx, dir, v1, true) // best effort: kill anyway
	var errs []error
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		pids, err := procs(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		for _, pid := range pids {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && err != unix.ESRCH {
				errs = append(errs, fmt.Errorf("cgroup %s: kill pid %d: %w", p, pid, err))
			}
		}
		return nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("cgroup %s: kill: %w", dir, err))
	}
	if terr := setFrozen(ctx, dir, v1, false); terr != nil {
		errs = append(errs, fmt.Errorf("kill: %w", terr))
	}
	if len(errs) > 0 && ferr != nil {
		errs = append(errs, fmt.Errorf("kill: %w", ferr))
	}
	return errors.Join(errs...)
}

// FreezerDir returns the directory of the freezer Freeze and Thaw use (v1
// freezer or cgroup2), for a record that may have to thaw it after a crash
// (OpenDir(dir).Thaw()).
func (c *Cgroup) FreezerDir() (string, error) {
	dir, _, err := c.freezer()
	return dir, err
}

package oprec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/cgroup"
	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/netlock"
	"github.com/ctr-cr/ctr-cr/internal/threadns"
)

// Sweep undoes what the records of dead ctr-cr processes list, in the order
// that leaves the host as it was before them:
//
//  1. a container a restore created and left "created" is deleted (with
//     the half-restored tree in it and the private bundle's use);
//  2. TCP connections of a live target left in repair mode leave it;
//  3. a lock table is deleted unless a complete image owns it (the target
//     is gone and the image's inventory names the table: restore removes
//     it then);
//  4. frozen cgroups are thawed;
//  5. pipes and mappings that injection left in a live target are closed
//     and unmapped (by injection: see Injected);
//  6. partial images are removed: a staging directory whole, a dump's
//     directory's image files only while it holds no inventory.img (a
//     complete image, the previous one included, is never touched).
//
// With dryRun nothing is changed. report gets one line per action (done
// or, with dryRun, to be done). A record is removed once every action
// succeeded; one whose action failed stays for the next sweep, and the
// error names it. Sweeps of several ctr-cr processes at once take turns.
func Sweep(dryRun bool, report func(string)) error {
	if report == nil {
		report = func(string) {}
	}
	if _, err := os.Stat(Dir); errors.Is(err, fs.ErrNotExist) {
		return nil // the common case: nothing was ever left
	}
	unlock, err := lockSweep()
	if err != nil {
		return err
	}
	defer unlock()
	recs, err := Stale()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, r := range recs {
		report(fmt.Sprintf("ctr-cr pid %d (%s, began %s) is gone:", r.Pid, r.Op, r.Began.Format(time.RFC3339)))
		if err := undo(r, dryRun, report); err != nil {
			errs = append(errs, fmt.Errorf("cleanup of ctr-cr pid %d (%s): %w", r.Pid, r.Op, err))
			continue
		}
		if !dryRun {
			if err := remove(r); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if !dryRun {
		removeStaleTemps()
	}
	return errors.Join(errs...)
}

// lockSweep serialises sweeps (flock on Dir/.sweep.lock, waited for).
func lockSweep() (func(), error) {
	f, err := os.OpenFile(filepath.Join(Dir, ".sweep.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("operation records: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("operation records: lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// removeStaleTemps removes the temporary files of records whose writer
// died while saving.
func removeStaleTemps() {
	tmps, _ := filepath.Glob(filepath.Join(Dir, "*.json.tmp"))
	for _, t := range tmps {
		// old ones only: a writer in another pid namespace (see
		// Record.PidNS) may look dead from here while it saves
		fi, err := os.Stat(t)
		if err != nil || time.Since(fi.ModTime()) < time.Minute {
			continue
		}
		if p, ok := parseName(strings.TrimSuffix(filepath.Base(t), ".tmp")); ok && !p.Alive() {
			os.Remove(t)
		}
	}
}

// undo does what Sweep says for one record.
func undo(r *Record, dryRun bool, report func(string)) error {
	var errs []error
	step := func(what string, fn func() (bool, error)) {
		if dryRun {
			report("  would " + what)
			return
		}
		did, err := fn()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
			report("  failed to " + what + ": " + err.Error())
		case did:
			report("  " + what + ": done")
		}
	}
	for _, c := range r.Containers {
		step(fmt.Sprintf("delete container %s (%s), left created by the restore", c.ID, filepath.Base(c.Runtime)), func() (bool, error) { return deleteCreated(c) })
	}
	for _, c := range r.Checkpointed {
		if !checkpointedImage(c) {
			continue
		}
		step(fmt.Sprintf("delete container %s (%s), killed by its checkpoint", c.ID, filepath.Base(c.Runtime)), func() (bool, error) { return deleteStopped(c) })
	}
	for _, rp := range r.Repairs {
		if !rp.Target.Alive() {
			continue // the connection went with its process
		}
		step(fmt.Sprintf("take fd %d (socket:[%d]) of pid %d out of TCP repair mode", rp.Fd, rp.Ino, rp.Target.Pid), func() (bool, error) { return endRepair(rp) })
	}
	for _, l := range r.NetLocks {
		if owned(l) {
			report(fmt.Sprintf("  keep network lock %s: the complete image in %s owns it (restore removes it)", l.Table, l.Image))
			continue
		}
		step("delete network lock table "+l.Table, func() (bool, error) { return unlockIn(l) })
	}
	for _, d := range r.Frozen {
		step("thaw cgroup "+d, func() (bool, error) { return thaw(d) })
	}
	for _, in := range r.Injected {
		// (after the thaw: a frozen target cannot run the calls)
		if !in.Target.Alive() {
			continue
		}
		step(in.describe(), func() (bool, error) { return undoInjected(in) })
	}
	for _, p := range r.Partials {
		if p.Staging {
			step("remove the unfinished directory "+p.Dir, func() (bool, error) { return removeAll(p.Dir) })
			continue
		}
		if complete(p.Dir) {
			continue
		}
		step("remove the partial image in "+p.Dir, func() (bool, error) { return removePartial(p) })
	}
	return errors.Join(errs...)
}

// complete reports whether dir holds a finished image (its inventory).
func complete(dir string) bool {
	_, err := os.Lstat(filepath.Join(dir, image.InventoryName))
	return err == nil
}

// owned reports whether l belongs to a complete image now: its target is
// gone (killed once the image was safe) and the image names the table.
func owned(l NetLock) bool {
	if l.Target.Alive() || l.Image == "" || !complete(l.Image) {
		return false
	}
	img, err := image.OpenWith(l.Image, image.OpenOptions{DeferPages: true})
	if err != nil {
		return false
	}
	return img.Inventory().GetNetLock() == l.Table
}

// unlockIn deletes table l.Table in the network namespace l.Netns, found
// through the target if it lives, else through any process or /run/netns
// name in it; a namespace no longer found took its tables with it.
func unlockIn(l NetLock) (bool, error) {
	if !netlock.ValidName(l.Table) {
		return false, fmt.Errorf("bad lock table name %q", l.Table)
	}
	path := findNetns(l)
	if path == "" {
		return false, nil
	}
	// on a thread of its own, dropped after (threadns.RunIn)
	err := threadns.RunInPath(path, unix.CLONE_NEWNET, func() error { return netlock.Unlock(l.Table) })
	return err == nil, err
}

// findNetns returns a path to the network namespace whose inode is
// l.Netns, or "".
func findNetns(l NetLock) string {
	match := func(p string) bool {
		var st unix.Stat_t
		return unix.Stat(p, &st) == nil && st.Ino == l.Netns
	}
	if p := fmt.Sprintf("/proc/%d/ns/net", l.Target.Pid); l.Target.Alive() && match(p) {
		return p
	}
	if match("/proc/self/ns/net") {
		return "/proc/self/ns/net"
	}
	named, _ := filepath.Glob("/run/netns/*")
	for _, p := range named {
		if match(p) {
			return p
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			if p := "/proc/" + e.Name() + "/ns/net"; match(p) {
				return p
			}
		}
	}
	return ""
}

// endRepair takes the live target's socket out of repair mode through a
// copy of its fd (pidfd_getfd), after checking the fd still is that socket.
func endRepair(rp Repair) (bool, error) {
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", rp.Target.Pid, rp.Fd))
	if err != nil || link != fmt.Sprintf("socket:[%d]", rp.Ino) {
		return false, nil // closed (or replaced) since
	}
	pfd, err := unix.PidfdOpen(rp.Target.Pid, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(pfd)
	if !rp.Target.Alive() {
		return false, nil // the pid was reused between the checks
	}
	fd, err := unix.PidfdGetfd(pfd, rp.Fd, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Ino != rp.Ino {
		return false, nil
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF_NO_WP); err != nil {
		return false, fmt.Errorf("TCP_REPAIR off: %w", err)
	}
	return true, nil
}

// thaw thaws the freezer directory dir; a cgroup gone since is fine.
func thaw(dir string) (bool, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	cg, err := cgroup.OpenDir(dir)
	if err != nil {
		return false, err
	}
	if frozen, err := cg.Frozen(); err == nil && !frozen {
		return false, nil
	}
	if err := cg.Thaw(); err != nil {
		if _, serr := os.Stat(dir); errors.Is(serr, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// removeAll removes the directory dir and what it holds.
func removeAll(dir string) (bool, error) {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return true, os.RemoveAll(dir)
}

// removePartial removes the image files of an unfinished dump in p.Dir
// (what image.Writer creates: *.img and the inventory being written), and
// p.Dir itself if the dump created it and nothing else is left in it.
func removePartial(p Partial) (bool, error) {
	ents, err := os.ReadDir(p.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	did := false
	for _, e := range ents {
		if !e.Type().IsRegular() || !(strings.HasSuffix(e.Name(), ".img") || e.Name() == image.InventoryName+".tmp") {
			continue
		}
		if err := os.Remove(filepath.Join(p.Dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return did, err
		}
		did = true
	}
	if p.CreatedDir {
		if os.Remove(p.Dir) == nil {
			did = true
		}
	}
	return did, nil
}

// checkpointedImage reports whether c.Image holds the complete image of
// c's checkpoint.
func checkpointedImage(c Checkpointed) bool {
	if !complete(c.Image) {
		return false
	}
	b, err := os.ReadFile(filepath.Join(c.Image, "ctr-cr.json"))
	if err != nil {
		return false
	}
	var meta struct {
		ID           string    `json:"id"`
		Checkpointed time.Time `json:"checkpointed"`
	}
	return json.Unmarshal(b, &meta) == nil && meta.ID == c.ID && meta.Checkpointed.Equal(c.Stamp)
}

// deleteStopped deletes c if its runtime reports it stopped.
func deleteStopped(c Checkpointed) (bool, error) {
	return deleteIn(Container{Runtime: c.Runtime, Root: c.Root, ID: c.ID}, func(status, _ string) bool { return status == "stopped" })
}

// PrivateBundleRoot is where a container restore keeps the bundle it
// gives the runtime's create (container.privateBundleRoot).
const PrivateBundleRoot = "/run/ctr-cr/restore"

// deleteCreated deletes c if its runtime reports it created from c.Bundle
// (a restore that died before starting it); anything else is left alone.
func deleteCreated(c Container) (bool, error) {
	return deleteIn(c, func(status, bundle string) bool {
		// before the restore points the state back at the user's
		// bundle, it names the private one
		return status == "created" && (bundle == c.Bundle || strings.HasPrefix(bundle, PrivateBundleRoot+"/"))
	})
}

// deleteIn deletes container c (RUNTIME delete --force) when the runtime
// knows it and its state's status and bundle pass ours.
func deleteIn(c Container, ours func(status, bundle string) bool) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rt := func(args ...string) *exec.Cmd {
		if c.Root != "" {
			args = append([]string{"--root", c.Root}, args...)
		}
		return exec.CommandContext(ctx, c.Runtime, args...)
	}
	out, err := rt("state", c.ID).Output()
	if err != nil {
		return false, nil // not there (or not known to this runtime)
	}
	var st struct {
		Status string `json:"status"`
		Bundle string `json:"bundle"`
	}
	if json.Unmarshal(out, &st) != nil || !ours(st.Status, st.Bundle) {
		return false, nil
	}
	if out, err := rt("delete", "--force", c.ID).CombinedOutput(); err != nil {
		return false, fmt.Errorf("%s delete --force %s: %w: %s", c.Runtime, c.ID, err, strings.TrimSpace(string(out)))
	}
	return true, nil
}

package container

// A checkpoint's image is written into a fresh directory beside its final
// place (DIR.tmp-XXXX next to DIR) and takes DIR's place only once it is
// complete and on disk: checkpoint → restore → checkpoint into the same
// BUNDLE/checkpoint works, and a checkpoint that fails half-way leaves the
// previous image in DIR untouched and restorable.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/imagesig"
	"github.com/ctr-cr/ctr-cr/internal/writeback"
)

// ErrBusy: another checkpoint of the same container, or into the same
// image directory, is running.
var ErrBusy = errors.New("busy")

// lockDir holds the per-container checkpoint locks.
const lockDir = "/run/ctr-cr"

// lockFile takes an exclusive flock on path (created if missing) without
// waiting: ErrBusy when another process holds it. The returned unlock
// removes the file while still holding the lock; a locker that opened the
// removed file finds its inode gone from path and tries again, so two
// lockers never both hold "the" lock.
func lockFile(path string) (unlock func(), err error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, ErrBusy
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		var held, now unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &held); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if err := unix.Stat(path, &now); err != nil || now.Ino != held.Ino || now.Dev != held.Dev {
			f.Close() // removed by the previous holder: lock the new file
			continue
		}
		return func() { os.Remove(path); f.Close() }, nil
	}
}

// lockContainer takes the lock of one container's checkpoints and
// restores, keyed by runtime, state root and id.
func lockContainer(rt *Runtime, id string) (func(), error) {
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	h := sha256.Sum256([]byte(rt.Name + "\x00" + rt.stateRoot() + "\x00" + id))
	unlock, err := lockFile(filepath.Join(lockDir, "checkpoint-"+hex.EncodeToString(h[:8])+".lock"))
	if errors.Is(err, ErrBusy) {
		return nil, fmt.Errorf("%w: another checkpoint or restore of container %s is running", ErrBusy, id)
	}
	return unlock, err
}

// lockImageDir takes the lock of the image directory final (final.lock
// beside it): one checkpoint writing, or restore reading, at a time.
func lockImageDir(final string) (func(), error) {
	unlock, err := lockFile(final + ".lock")
	if errors.Is(err, ErrBusy) {
		return nil, fmt.Errorf("%w: another checkpoint or restore is using the image directory %s", ErrBusy, final)
	}
	return unlock, err
}

// stagedImage is an image being written in tmp for the directory final.
type stagedImage struct {
	final  string
	tmp    string
	unlock func()
}

// stageImage locks the image directory final (its lock file is
// final.lock beside it), cleans what a crashed checkpoint left beside it,
// checks that final is missing, empty or a previous image (anything else is
// refused, never replaced) and makes the fresh directory the new image is
// written into.
func stageImage(final string) (*stagedImage, error) {
	parent, base := filepath.Split(final)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockImageDir(final)
	if err != nil {
		return nil, err
	}
	s := &stagedImage{final: final, unlock: unlock}
	if err := recoverStaged(parent, base); err != nil {
		unlock()
		return nil, err
	}
	if err := replaceable(final); err != nil {
		unlock()
		return nil, err
	}
	if s.tmp, err = os.MkdirTemp(parent, base+".tmp-"); err != nil {
		unlock()
		return nil, err
	}
	return s, nil
}

// recoverStaged undoes what a checkpoint that died beside final left: its
// unfinished fresh directories are removed; a previous image moved aside
// (final.old-*) goes back to final if final is missing, else is removed.
func recoverStaged(parent, base string) error {
	tmps, _ := filepath.Glob(filepath.Join(parent, base+".tmp-*"))
	for _, d := range tmps {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("removing the unfinished image %s: %w", d, err)
		}
	}
	olds, _ := filepath.Glob(filepath.Join(parent, base+".old-*"))
	for _, d := range olds {
		if _, err := os.Lstat(filepath.Join(parent, base)); errors.Is(err, fs.ErrNotExist) {
			if err := os.Rename(d, filepath.Join(parent, base)); err != nil {
				return fmt.Errorf("putting the previous image %s back: %w", d, err)
			}
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("removing the replaced image %s: %w", d, err)
		}
	}
	return nil
}

// replaceable accepts a missing or empty final, or one that holds only
// the files of a ctr-cr image (and logs or pid files written into it).
func replaceable(final string) error {
	ents, err := os.ReadDir(final)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("image directory %s: %w", final, err)
	}
	var st, pst unix.Stat_t
	if unix.Stat(final, &st) == nil && unix.Stat(filepath.Dir(final), &pst) == nil && st.Dev != pst.Dev {
		return fmt.Errorf("image directory %s is a mount point: the new image is written beside it and renamed into its place, which a mount point cannot be; use a directory inside it", final)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || !imageFileName(e.Name()) {
			return fmt.Errorf("image directory %s holds %s, which is not part of a ctr-cr image; refusing to replace it", final, e.Name())
		}
	}
	return nil
}

// imageFileName reports whether name is a file a ctr-cr image directory
// holds: the core image's *.img (and its inventory being written), the
// container layer's files and tmpfs archives, logs and pid files.
func imageFileName(name string) bool {
	switch name {
	case SpecDumpName, MetadataName, StateName, imagesig.Name, StdioName:
		return true
	case "stats-dump", "stats-restore": // a platform's work path may be the image's
		return true
	}
	for _, suf := range []string{".img", ".tar", ".log", ".pid"} {
		if strings.HasSuffix(name, suf) {
			return true
		}
	}
	return strings.HasPrefix(name, ".inventory")
}

// commit makes the staged image the one in final: every file and the
// directory are fsynced, then the fresh directory takes final's place in
// one step (renameat2 RENAME_EXCHANGE; where the file system lacks it,
// final is moved aside to final.old-* first and put back if the second
// rename fails), the parent is fsynced and the previous image removed. An
// error means final still holds the previous image (or nothing, if there
// was none).
func (s *stagedImage) commit() error {
	if err := syncTree(s.tmp); err != nil {
		return fmt.Errorf("image %s: sync: %w", s.tmp, err)
	}
	parent := filepath.Dir(s.final)
	old := s.tmp // after an exchange the previous image is there
	err := unix.Renameat2(unix.AT_FDCWD, s.tmp, unix.AT_FDCWD, s.final, unix.RENAME_EXCHANGE)
	switch {
	case err == nil:
	case errors.Is(err, unix.ENOENT):
		if err := os.Rename(s.tmp, s.final); err != nil { // no previous image
			return fmt.Errorf("image %s: %w", s.final, err)
		}
		old = ""
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS):
		if old, err = s.moveAside(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("image %s: replacing it: %w", s.final, err)
	}
	s.tmp = ""
	syncPath(parent) // the new image is in place; a failed sync is not undone
	if old != "" {
		os.RemoveAll(old)
	}
	return nil
}

// moveAside replaces final by the staged image in two renames, for file
// systems without RENAME_EXCHANGE; it returns where the previous image went.
func (s *stagedImage) moveAside() (string, error) {
	old := s.final + ".old-" + filepath.Base(s.tmp)[len(filepath.Base(s.final))+len(".tmp-"):]
	if err := os.Rename(s.final, old); err != nil {
		return "", fmt.Errorf("image %s: moving the previous image aside: %w", s.final, err)
	}
	if err := os.Rename(s.tmp, s.final); err != nil {
		if rerr := os.Rename(old, s.final); rerr != nil {
			return "", fmt.Errorf("image %s: %w (and putting the previous image back from %s: %v)", s.final, err, old, rerr)
		}
		return "", fmt.Errorf("image %s: %w", s.final, err)
	}
	return old, nil
}

// done removes the staged directory if it was not committed and releases
// the lock.
func (s *stagedImage) done() {
	if s.tmp != "" {
		os.RemoveAll(s.tmp)
		s.tmp = ""
	}
	if s.unlock != nil {
		s.unlock()
		s.unlock = nil
	}
}

// syncTree fsyncs every regular file directly in dir, then dir. The
// files are synced at once, syncTreeJobs at a time: the file system joins
// concurrent fsyncs into one journal commit, where fsyncs in a row wait
// for one commit each (25 small files on this VM's ext4: 10-60 ms in a
// row, 2-10 ms at once). The commit runs frozen, before the tree is
// killed.
func syncTree(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, syncTreeJobs)
	)
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(p string) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := syncPath(p); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}(filepath.Join(dir, e.Name()))
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return syncPath(dir)
}

// startWriteback starts the disk writes of the staged image's files while
// the dump is still writing them (internal/writeback): the commit's
// fsyncs, in the frozen time, then wait for what is left (for a 256 MiB
// container they had taken ~120 ms). Durability still comes from the
// commit's fsyncs only. It returns what stops it.
func (s *stagedImage) startWriteback() (stop func()) {
	return writeback.Start(writeback.Dir(s.tmp))
}

// syncTreeJobs bounds the fsyncs syncTree runs at once.
const syncTreeJobs = 16

// syncPath fsyncs the file or directory at p.
func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

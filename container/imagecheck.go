package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ctr-cr/ctr-cr/mounts"
)

// validateTmpfsFiles checks the tmpfs tar names of container.json: at most
// one per mount, each a plain file name "tmpfs-..." beside the file (no
// "/", NUL, "." or "..", at most NAME_MAX bytes), for the clean absolute
// mount point of a tmpfs mount of the saved tree (what Checkpoint writes).
func validateTmpfsFiles(files map[string]string, tree *mounts.Tree) error {
	if len(files) == 0 {
		return nil
	}
	if tree == nil {
		return errors.New("tmpfs files without a mount tree")
	}
	if len(files) > len(tree.Mounts) {
		return fmt.Errorf("%d tmpfs files for %d mounts", len(files), len(tree.Mounts))
	}
	tmpfs := map[string]bool{}
	for _, m := range tree.Tmpfs() {
		tmpfs[m.MountPoint] = true
	}
	for mp, name := range files {
		if !strings.HasPrefix(name, "tmpfs-") || len(name) > 255 || strings.ContainsAny(name, "/\x00") {
			return fmt.Errorf("tmpfs file %q for %q: not a file name tmpfs-*", name, mp)
		}
		if !strings.HasPrefix(mp, "/") || path.Clean(mp) != mp || strings.ContainsRune(mp, 0) {
			return fmt.Errorf("tmpfs file %q: mount point %q is not absolute and clean", name, mp)
		}
		if !tmpfs[mp] {
			return fmt.Errorf("tmpfs file %q: %q is not a tmpfs mount of the saved tree", name, mp)
		}
	}
	return nil
}

// validate checks ctr-cr.json read back from an image before the restore
// uses it: format 1, a runtime it knows, a runtime root that is a path
// (the --root given at checkpoint, which may be relative) and a container
// id that can only name one directory entry under it and cannot pass for a
// runtime option.
func (m *Metadata) validate() error {
	if m.Format != 1 {
		return fmt.Errorf("format %d, want 1", m.Format)
	}
	switch m.Runtime {
	case "runc", "crun":
	default:
		return fmt.Errorf("runtime %q: only runc and crun are supported", m.Runtime)
	}
	if r := m.RuntimeRoot; strings.ContainsRune(r, 0) || len(r) > 4096 {
		return fmt.Errorf("runtime root %q: not a path", r)
	}
	if !safeID(m.ID) {
		return fmt.Errorf("container id %q: want 1-1024 of [A-Za-z0-9_+.-], not starting with '-', not . or ..", m.ID)
	}
	return nil
}

// safeID accepts the container ids runc accepts (letters, digits, "_",
// "+", "-", "."), except "." and "..", and ids starting with "-" (the
// runtimes' command lines would read them as options).
func safeID(id string) bool {
	if id == "" || len(id) > 1024 || id == "." || id == ".." || id[0] == '-' {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// maxImageJSON bounds what readImageFile reads: container.json holds the
// IPC contents (at most nsdump.MaxIPCData, base64) besides small parts.
const maxImageJSON = 1 << 30

// openImageFile opens a file of the container layer in an image for
// reading: a regular file only, never through a symlink (which could make
// the restore read a host file into the container) nor a FIFO or device
// (which would block or never end).
func openImageFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s: is a symbolic link, want a regular file", path)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file (%v)", path, fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// readImageFile reads a file of the container layer (openImageFile), at
// most maxImageJSON bytes.
func readImageFile(path string) ([]byte, error) {
	f, err := openImageFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxImageJSON+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxImageJSON {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxImageJSON)
	}
	return b, nil
}

// trustedRuntimeRoot accepts a runtime state root read from an image
// (ctr-cr.json) only when root could have put it there: an absolute, clean
// path whose every component is a real directory (no symbolic link)
// owned by root and writable by no one else. The runtime keeps its
// containers' state and ctr-cr writes the privileged parts of a restore
// there; a root an image names must not be one someone else controls.
func trustedRuntimeRoot(p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return errors.New("not an absolute, clean path")
	}
	for dir := p; ; dir = filepath.Dir(dir) {
		fi, err := os.Lstat(dir)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		switch {
		case !fi.IsDir():
			return fmt.Errorf("%s is not a directory", dir)
		case !ok || st.Uid != 0:
			return fmt.Errorf("%s is not owned by root", dir)
		case fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0:
			return fmt.Errorf("%s is writable by others (mode %v)", dir, fi.Mode())
		case fi.Mode().Perm()&0o022 != 0 && dir == p:
			return fmt.Errorf("%s is writable by others (mode %v)", dir, fi.Mode())
		}
		if dir == "/" {
			return nil
		}
	}
}

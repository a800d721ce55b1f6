package mounts

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/internal/mountinfo"
	"github.com/ctr-cr/ctr-cr/internal/threadns"
)

// Plan is what Apply recreates in a target mount namespace.
type Plan struct {
	// Tree is the saved tree; it is validated first.
	Tree *Tree
	// Externals maps a mount's External key (its destination) to the host
	// path (in the caller's mount namespace) to bind there. Only externals
	// the target does not have yet need an entry.
	Externals map[string]string
	// Tmpfs opens the saved contents of a KindTmpfs mount; nil, or a nil
	// reader, leaves the new tmpfs empty. Apply closes the reader.
	Tmpfs func(m *Mount) (io.ReadCloser, error)
}

// Report lists what Apply did, by mount point.
type Report struct {
	Created  []string // mounts added
	Adjusted []string // existing mounts whose flags or propagation were changed
	Filled   []string // present tmpfs mounts whose saved contents were merged in
}

// Apply makes the mount namespace of pid hold the mounts of plan.Tree. The
// target is expected to be built by the OCI runtime from config.json already
// (rootfs pivoted, standard mounts): a saved mount is taken as present when
// the target has a mount with the same mount point and filesystem type (each
// target mount matches one saved mount); the root mount is never touched.
// Saved tmpfs contents are merged (MergeTmpfs) into present tmpfs mounts
// whose superblock is writable (runtime-made /dev, /dev/shm, config.json
// tmpfs), and written into created ones. A superblock that is also mounted
// in the caller's own namespace outside the container's root (the host's: a
// host tmpfs bound in, the host's sysfs or cgroup2 of a container sharing
// those namespaces) is never merged into nor made read-only: a tree that
// asks for it is refused (ErrInvalidTree), nothing written.
// Missing mounts are created parent first, from a locked OS thread that has
// joined pid's mount, network, IPC and cgroup namespaces and chrooted to its
// root: tmpfs (options, then contents via RestoreTmpfs before it is
// attached), proc (for pid's pid namespace, fsconfig "pidns"), sysfs, devpts,
// mqueue, cgroup, cgroup2 (new superblocks with their options, through
// fsopen/fsconfig/fsmount), external binds (the host path is cloned with
// open_tree(OPEN_TREE_CLONE) before the namespace is joined, then attached
// with move_mount) and binds of other mounts of the tree. Missing mount points
// are created (a directory, or an empty file for a file bind); no symlink is
// followed on the way. Then, parent first, per-mount flags (read-only last),
// superblock read-only and propagation are set on created mounts and
// adjusted on present ones where they differ. On error the mounts created so
// far are detached (MNT_DETACH) and the error names the mount point and the
// operation.
func Apply(pid int, plan Plan) (*Report, error) {
	if err := plan.Tree.Validate(); err != nil {
		return nil, fmt.Errorf("apply mounts to pid %d: %w", pid, err)
	}
	infos, err := mountinfo.ForPid(pid, nil)
	if err != nil {
		return nil, fmt.Errorf("apply mounts to pid %d: target %w", pid, err)
	}
	own, err := ownMounts()
	if err != nil {
		return nil, fmt.Errorf("apply mounts to pid %d: %w", pid, err)
	}
	hostSB := hostSuperblocks(pid, own)
	avail := map[string][]mountinfo.Info{}
	for _, in := range infos {
		k := path.Clean(in.MountPoint) + "\x00" + in.FSType
		avail[k] = append(avail[k], in)
	}

	mounts := plan.Tree.Mounts
	type work struct {
		m        *Mount
		existing *mountinfo.Info // the target's mount when present
		fd       int             // mount fd (created) or O_PATH fd of the present mount
		extfd    int             // pre-opened external clone, -1
		attached bool
	}
	var madePoints []string // mount points Apply created, in creation order
	ws := make([]*work, 0, len(mounts))
	closeAll := func() {
		for _, w := range ws {
			if w.fd >= 0 {
				unix.Close(w.fd)
			}
			if w.extfd >= 0 {
				unix.Close(w.extfd)
			}
		}
	}
	defer closeAll()
	for i := 1; i < len(mounts); i++ {
		m := &mounts[i]
		w := &work{m: m, fd: -1, extfd: -1}
		k := m.MountPoint + "\x00" + m.FSType
		if l := avail[k]; len(l) > 0 {
			w.existing = &l[len(l)-1] // the last listed is the topmost
			avail[k] = l[:len(l)-1]
		} else if m.Kind == KindCgroup2 {
			if err := checkNewCgroup2(pid, m, own); err != nil {
				return nil, fmt.Errorf("apply mounts to pid %d: mount %s: %w", pid, m.MountPoint, err)
			}
		} else if m.Kind == KindExternal {
			src, ok := plan.Externals[m.External]
			if !ok || src == "" {
				return nil, fmt.Errorf("apply mounts to pid %d: mount %s: external %q has no source path", pid, m.MountPoint, m.External)
			}
			fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
			if err != nil {
				return nil, fmt.Errorf("apply mounts to pid %d: mount %s: clone external source %s: %w", pid, m.MountPoint, src, err)
			}
			w.extfd = fd
		}
		ws = append(ws, w)
	}
	pidns, err := unix.Open(procfs.PidPath(pid, "ns/pid"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("apply mounts to pid %d: open pid namespace: %w", pid, err)
	}
	defer unix.Close(pidns)

	rep := &Report{}
	byID := map[int]*Mount{}
	for i := range mounts {
		byID[mounts[i].ID] = &mounts[i]
	}
	err = threadns.RunInRoot(pid, []string{"net", "ipc", "cgroup"}, func() (err error) {
		defer func() {
			if err == nil {
				return
			}
			for i := len(ws) - 1; i >= 0; i-- {
				if ws[i].attached {
					unix.Unmount(ws[i].m.MountPoint, unix.MNT_DETACH)
				}
			}
			for i := len(madePoints) - 1; i >= 0; i-- {
				removePoint(madePoints[i])
			}
		}()
		// Present mounts are opened first, before anything can cover them.
		for _, w := range ws {
			if w.existing == nil {
				continue
			}
			if w.fd, err = openInRoot(w.m.MountPoint, unix.O_PATH); err != nil {
				return fmt.Errorf("mount %s: open present mount: %w", w.m.MountPoint, err)
			}
		}
		// Saved contents go into present tmpfs mounts too (through a clone
		// of the mount alone, so that the mounts on top of it are not in
		// the way); a read-only superblock (a masked path) is left alone.
		for _, w := range ws {
			if w.existing == nil || w.m.Kind != KindTmpfs || plan.Tmpfs == nil || w.existing.Root != "/" ||
				mountinfo.HasOption(w.existing.SuperOptions, "ro") {
				continue
			}
			hostAt := hostSB[[2]uint32{w.existing.Major, w.existing.Minor}]
			if err := mergePresent(w.fd, w.m, plan.Tmpfs, hostAt); err != nil {
				return fmt.Errorf("mount %s: present tmpfs: %w", w.m.MountPoint, err)
			}
			rep.Filled = append(rep.Filled, w.m.MountPoint)
		}
		for _, w := range ws {
			if w.existing != nil {
				continue
			}
			m := w.m
			switch {
			case m.Kind == KindExternal:
				w.fd, w.extfd = w.extfd, -1
			case m.Kind == KindBind:
				src := byID[m.BindOf]
				p := path.Join(src.MountPoint, m.BindPath)
				sfd, err := openInRoot(p, unix.O_PATH)
				if err != nil {
					return fmt.Errorf("mount %s: open bind source %s: %w", m.MountPoint, p, err)
				}
				w.fd, err = unix.OpenTree(sfd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
				unix.Close(sfd)
				if err != nil {
					return fmt.Errorf("mount %s: clone bind source %s: %w", m.MountPoint, p, err)
				}
			default:
				if w.fd, err = newFS(m, pidns); err != nil {
					return fmt.Errorf("mount %s: new %s: %w", m.MountPoint, m.FSType, err)
				}
			}
			if m.Kind == KindTmpfs && plan.Tmpfs != nil {
				if err := fillTmpfs(w.fd, m, plan.Tmpfs); err != nil {
					return fmt.Errorf("mount %s: %w", m.MountPoint, err)
				}
			}
			if err := setAttr(w.fd, flagsAttr(m.Flags, false)); err != nil {
				return fmt.Errorf("mount %s: set flags: %w", m.MountPoint, err)
			}
			var st unix.Stat_t
			if err := unix.Fstat(w.fd, &st); err != nil {
				return fmt.Errorf("mount %s: fstat: %w", m.MountPoint, err)
			}
			tfd, err := mountPoint(m.MountPoint, st.Mode&unix.S_IFMT == unix.S_IFDIR, &madePoints)
			if err != nil {
				return fmt.Errorf("mount %s: create mount point: %w", m.MountPoint, err)
			}
			err = unix.MoveMount(w.fd, "", tfd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
			unix.Close(tfd)
			if err != nil {
				return fmt.Errorf("mount %s: move_mount: %w", m.MountPoint, err)
			}
			w.attached = true
			rep.Created = append(rep.Created, m.MountPoint)
		}
		// Read-only, superblock read-only and propagation, parent first.
		for _, w := range ws {
			m := w.m
			want := flagsAttr(m.Flags, true)
			changed := false
			if w.existing == nil || parseFlags(w.existing.Options) != m.Flags {
				if err := setAttr(w.fd, want); err != nil {
					return fmt.Errorf("mount %s: set flags: %w", m.MountPoint, err)
				}
				changed = true
			}
			if m.SuperReadOnly && (w.existing == nil || !mountinfo.HasOption(w.existing.SuperOptions, "ro")) && newFSKinds[m.Kind] {
				if at := sharedSuperblock(w.fd, hostSB); at != "" {
					return fmt.Errorf("mount %s: %w: its %s superblock is mounted at %s outside the container too; not made read-only", m.MountPoint, ErrInvalidTree, m.FSType, at)
				}
				if err := superReadOnly(w.fd); err != nil {
					return fmt.Errorf("mount %s: superblock read-only: %w", m.MountPoint, err)
				}
				changed = true
			}
			p := m.Propagation
			if w.existing == nil || p.Shared != (w.existing.Shared != 0) || p.Slave != (w.existing.Master != 0) || p.Unbindable != w.existing.Unbindable {
				if err := setPropagation(w.fd, p); err != nil {
					return fmt.Errorf("mount %s: set propagation: %w", m.MountPoint, err)
				}
				changed = true
			}
			if changed && w.existing != nil {
				rep.Adjusted = append(rep.Adjusted, m.MountPoint)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("apply mounts to pid %d: %w", pid, err)
	}
	return rep, nil
}

func fillTmpfs(fd int, m *Mount, open func(*Mount) (io.ReadCloser, error)) error {
	r, err := open(m)
	if err != nil {
		return fmt.Errorf("open saved tmpfs contents: %w", err)
	}
	if r == nil {
		return nil
	}
	defer r.Close()
	return RestoreTmpfs(fd, r)
}

// mergePresent merges the saved contents of m into the present tmpfs
// mount fd (O_PATH of its root) through a writable clone of the mount alone;
// an unbindable mount is written in place. hostAt, when not "", is where
// the same superblock is mounted outside the container: saved contents for
// it are refused (ErrInvalidTree), not written into the host's tmpfs.
func mergePresent(fd int, m *Mount, open func(*Mount) (io.ReadCloser, error), hostAt string) error {
	r, err := open(m)
	if err != nil {
		return fmt.Errorf("open saved tmpfs contents: %w", err)
	}
	if r == nil {
		return nil
	}
	defer r.Close()
	if hostAt != "" {
		return fmt.Errorf("%w: the tmpfs is mounted at %s outside the container too; saved contents are not written into it", ErrInvalidTree, hostAt)
	}
	cfd, err := unix.OpenTree(fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.EINVAL) {
		cfd, err = unix.Dup(fd)
	} else if err == nil {
		err = setAttr(cfd, unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY})
	}
	if err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	defer unix.Close(cfd)
	return MergeTmpfs(cfd, r)
}

// ownMounts reads the mounts of the calling thread's own mount namespace
// (the host's, for a restore; see hostSuperblocks).
func ownMounts() ([]mountinfo.Info, error) {
	return mountinfo.Read("/proc/thread-self/mountinfo", nil)
}

// checkNewCgroup2 refuses a new cgroup2 mount for a target that shares the
// caller's cgroup namespace with options other than those of the caller's
// own cgroup2 mount (none when it has none): in the initial cgroup
// namespace, mounting cgroup2 sets the hierarchy-wide options (nsdelegate,
// memory_recursiveprot, ...) to the new mount's, for the whole host.
func checkNewCgroup2(pid int, m *Mount, own []mountinfo.Info) error {
	var a, b unix.Stat_t
	if err := unix.Stat(procfs.PidPath(pid, "ns/cgroup"), &a); err != nil {
		return fmt.Errorf("cgroup namespace: %w", err)
	}
	if err := unix.Stat("/proc/thread-self/ns/cgroup", &b); err != nil {
		return fmt.Errorf("own cgroup namespace: %w", err)
	}
	if a.Ino != b.Ino || a.Dev != b.Dev {
		return nil
	}
	var have []string
	for _, in := range own {
		if in.FSType == "cgroup2" {
			have = fsOptions(KindCgroup2, in.SuperOptions)
			break
		}
	}
	if !sameOptionSet(have, m.FSOptions) {
		return fmt.Errorf("a new cgroup2 mount with options %v in the host's cgroup namespace would change the host's cgroup2 options %v", m.FSOptions, have)
	}
	return nil
}

// sameOptionSet reports whether a and b hold the same options.
func sameOptionSet(a, b []string) bool {
	set := map[string]int{}
	for _, o := range a {
		set[o] |= 1
	}
	for _, o := range b {
		set[o] |= 2
	}
	for _, v := range set {
		if v != 3 {
			return false
		}
	}
	return true
}

// hostSuperblocks maps the device numbers of the superblocks mounted in
// the caller's namespace (own) outside the root of pid (the container's
// rootfs as the host sees it: mounts propagated from the container are
// its own) to one of their mount points there.
func hostSuperblocks(pid int, own []mountinfo.Info) map[[2]uint32]string {
	root, err := os.Readlink(procfs.PidPath(pid, "root"))
	if err != nil || !strings.HasPrefix(root, "/") {
		root = "/"
	}
	sb := map[[2]uint32]string{}
	for _, in := range own {
		if root != "/" && (in.MountPoint == root || strings.HasPrefix(in.MountPoint, root+"/")) {
			continue
		}
		sb[[2]uint32{in.Major, in.Minor}] = in.MountPoint
	}
	return sb
}

// sharedSuperblock returns where the superblock of the mount fd is
// mounted outside the container (hostSuperblocks), "" when nowhere; an fd
// that cannot be examined counts as shared.
func sharedSuperblock(fd int, host map[[2]uint32]string) string {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "(fstat failed)"
	}
	return host[[2]uint32{unix.Major(st.Dev), unix.Minor(st.Dev)}]
}

// newFS makes a detached mount of a new filesystem of m.FSType with
// m.FSOptions and m.Source as its source name (proc for the pid namespace
// pidns).
func newFS(m *Mount, pidns int) (int, error) {
	fsfd, err := unix.Fsopen(m.FSType, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen: %w", err)
	}
	defer unix.Close(fsfd)
	// the source name mountinfo shows ("made" of mount -t tmpfs made /x)
	if m.Source != "" && m.Source != "none" {
		if err := unix.FsconfigSetString(fsfd, "source", m.Source); err != nil {
			return -1, fsError(fsfd, "fsconfig source="+m.Source, err)
		}
	}
	for _, o := range m.FSOptions {
		k, v, hasVal := strings.Cut(o, "=")
		if hasVal {
			err = unix.FsconfigSetString(fsfd, k, v)
		} else {
			err = unix.FsconfigSetFlag(fsfd, k)
		}
		if err != nil {
			return -1, fsError(fsfd, "fsconfig "+o, err)
		}
	}
	if m.Kind == KindProc {
		if err := unix.FsconfigSetFd(fsfd, "pidns", pidns); err != nil {
			return -1, fsError(fsfd, "fsconfig pidns", err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fsError(fsfd, "fsconfig create", err)
	}
	fd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return -1, fsError(fsfd, "fsmount", err)
	}
	return fd, nil
}

// fsError adds the messages the kernel queued on an fs context to err.
func fsError(fsfd int, op string, err error) error {
	var msgs []string
	buf := make([]byte, 1024)
	for i := 0; i < 8; i++ {
		n, rerr := unix.Read(fsfd, buf)
		if rerr != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	if len(msgs) > 0 {
		return fmt.Errorf("%s: %w (%s)", op, err, strings.Join(msgs, "; "))
	}
	return fmt.Errorf("%s: %w", op, err)
}

// flagsAttr turns Flags into mount_setattr(2) set/clear masks; read-only is
// included only when withRO.
func flagsAttr(f Flags, withRO bool) unix.MountAttr {
	var a unix.MountAttr
	bit := func(on bool, b uint64) {
		if on {
			a.Attr_set |= b
		} else {
			a.Attr_clr |= b
		}
	}
	if withRO {
		bit(f.ReadOnly, unix.MOUNT_ATTR_RDONLY)
	}
	bit(f.NoSuid, unix.MOUNT_ATTR_NOSUID)
	bit(f.NoDev, unix.MOUNT_ATTR_NODEV)
	bit(f.NoExec, unix.MOUNT_ATTR_NOEXEC)
	bit(f.NoDiratime, unix.MOUNT_ATTR_NODIRATIME)
	bit(f.NoSymfollow, unix.MOUNT_ATTR_NOSYMFOLLOW)
	a.Attr_clr |= unix.MOUNT_ATTR__ATIME
	switch f.Atime {
	case "noatime":
		a.Attr_set |= unix.MOUNT_ATTR_NOATIME
	case "strictatime":
		a.Attr_set |= unix.MOUNT_ATTR_STRICTATIME
	default:
		a.Attr_set |= unix.MOUNT_ATTR_RELATIME
	}
	return a
}

func setAttr(fd int, a unix.MountAttr) error {
	return unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &a)
}

func setPropagation(fd int, p Propagation) error {
	set := func(t uint64) error {
		return unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Propagation: t})
	}
	var steps []uint64
	switch {
	case p.Unbindable:
		steps = []uint64{unix.MS_UNBINDABLE}
	case p.Slave && p.Shared:
		steps = []uint64{unix.MS_SLAVE, unix.MS_SHARED}
	case p.Slave:
		steps = []uint64{unix.MS_SLAVE}
	case p.Shared:
		steps = []uint64{unix.MS_SHARED}
	default:
		steps = []uint64{unix.MS_PRIVATE}
	}
	for _, s := range steps {
		if err := set(s); err != nil {
			return err
		}
	}
	return nil
}

// superReadOnly makes the superblock of the mount fd read-only (fspick +
// reconfigure).
func superReadOnly(fd int) error {
	fsfd, err := unix.Fspick(fd, "", unix.FSPICK_EMPTY_PATH|unix.FSPICK_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fspick: %w", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigSetFlag(fsfd, "ro"); err != nil {
		return fsError(fsfd, "fsconfig ro", err)
	}
	if err := unix.FsconfigReconfigure(fsfd); err != nil {
		return fsError(fsfd, "fsconfig reconfigure", err)
	}
	return nil
}

// mountPoint opens (O_PATH) the mount point p inside the current root,
// creating missing directories, and the last element as a directory or an
// empty file; no symlink is followed. Paths it creates are appended to made.
func mountPoint(p string, dir bool, made *[]string) (int, error) {
	fd, err := openInRoot(p, unix.O_PATH)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	parent, leaf := path.Split(p)
	pfd, err := mountPoint(path.Clean(parent), true, made)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	if dir {
		err = unix.Mkdirat(pfd, leaf, 0o755)
	} else {
		var ffd int
		ffd, err = unix.Openat(pfd, leaf, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(ffd)
		}
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("create %s: %w", p, err)
	}
	if err == nil {
		*made = append(*made, p)
	}
	return openInRoot(p, unix.O_PATH)
}

// removePoint removes a mount point Apply created, if it is still an empty
// directory or an empty regular file (rollback; errors are ignored).
func removePoint(p string) {
	parent, leaf := path.Split(p)
	pfd, err := openInRoot(path.Clean(parent), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if unix.Fstatat(pfd, leaf, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		unix.Unlinkat(pfd, leaf, unix.AT_REMOVEDIR) // fails unless empty
	case unix.S_IFREG:
		if st.Size == 0 {
			unix.Unlinkat(pfd, leaf, 0)
		}
	}
}

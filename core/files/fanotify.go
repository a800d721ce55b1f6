package files

// fanotify groups. fdinfo shows the group and one line per mark (all
// numbers hex; see testdata/fdinfo_fanotify.txt, Linux 6.18), newest
// mark first:
//
//	fanotify flags:3 event-flags:8000
//	fanotify ino:985a31 sdev:fe00000 mflags:0 mask:48000002 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:315a980029a0814d
//	fanotify mnt_id:16 mflags:0 mask:1000 ignored_mask:0
//	fanotify sdev:15 mflags:0 mask:1000 ignored_mask:0
//
// An inode mark is found again by its file handle (as inotify watches
// are), a mount mark by a path of that mount, a file system mark by a path
// of a mount of it. Events are not carried: a group with events queued is
// refused, and so are the permission classes (a permission event read but
// not answered yet shows nowhere, and its task waits for the answer).

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/internal/mountinfo"
)

const (
	fanClassMask = unix.FAN_CLASS_CONTENT | unix.FAN_CLASS_PRE_CONTENT
	// fanMarkUserFlags are the mark flags fdinfo shows in mflags.
	fanMarkUserFlags = unix.FAN_MARK_IGNORED_SURV_MODIFY | unix.FAN_MARK_EVICTABLE | unix.FAN_MARK_IGNORE
)

// fanotifyMark is one mark line of fdinfo, before its object is resolved.
type fanotifyMark struct {
	typ   imagepb.FanotifyMark_Type
	inode inotifyMark // INODE: Ino, Sdev, handle; FILESYSTEM: Sdev
	mntID uint64      // MOUNT
	m     *imagepb.FanotifyMark
}

// parseFanotify reads a fanotify fdinfo: the group's flags and its marks
// in fdinfo order (newest first). A mark of an unknown kind is an error.
func parseFanotify(fi *procfs.FdInfo) (flags, eventFlags uint32, marks []fanotifyMark, err error) {
	header := false
	for _, l := range strings.Split(fi.Raw, "\n") {
		rest, ok := strings.CutPrefix(l, "fanotify ")
		if !ok {
			continue
		}
		kv, err := fanotifyFields(rest)
		if err != nil {
			return 0, 0, nil, fmt.Errorf("fanotify: %w in %q", err, l)
		}
		if _, ok := kv["flags"]; ok {
			if header {
				return 0, 0, nil, fmt.Errorf("fanotify: two group lines (%q)", l)
			}
			f, ok1 := kv["flags"]
			e, ok2 := kv["event-flags"]
			if !ok1 || !ok2 {
				return 0, 0, nil, fmt.Errorf("fanotify: no event-flags in %q", l)
			}
			flags, eventFlags, header = uint32(f), uint32(e), true
			continue
		}
		m, err := fanotifyMarkOf(kv, rest)
		if err != nil {
			return 0, 0, nil, fmt.Errorf("fanotify: %w in %q", err, l)
		}
		marks = append(marks, m)
	}
	if !header {
		return 0, 0, nil, errors.New("fanotify: no \"fanotify flags:\" line in fdinfo")
	}
	return flags, eventFlags, marks, nil
}

// fanotifyFields splits "k:v k:v" (hex values; f_handle kept as text in
// the handle parse) into a map.
func fanotifyFields(rest string) (map[string]uint64, error) {
	kv := map[string]uint64{}
	for _, f := range strings.Fields(rest) {
		k, v, ok := strings.Cut(f, ":")
		if !ok {
			return nil, fmt.Errorf("bad field %q", f)
		}
		if k == "f_handle" {
			continue
		}
		n, err := strconv.ParseUint(v, 16, 64)
		if err != nil {
			return nil, fmt.Errorf("field %s %q: %v", k, v, err)
		}
		kv[k] = n
	}
	return kv, nil
}

func fanotifyMarkOf(kv map[string]uint64, rest string) (fanotifyMark, error) {
	m := fanotifyMark{m: &imagepb.FanotifyMark{}}
	for _, k := range []string{"mflags", "mask", "ignored_mask"} {
		if _, ok := kv[k]; !ok {
			return m, fmt.Errorf("no %s", k)
		}
	}
	m.m.Mflags, m.m.Mask, m.m.IgnoredMask = uint32(kv["mflags"]), uint32(kv["mask"]), uint32(kv["ignored_mask"])
	_, hasIno := kv["ino"]
	_, hasMnt := kv["mnt_id"]
	_, hasSdev := kv["sdev"]
	switch {
	case hasIno && hasSdev:
		m.typ = imagepb.FanotifyMark_INODE
		// the inode part has inotify's syntax: parse it with inotify's parser
		fi := &procfs.FdInfo{Raw: "inotify wd:1 " + rest}
		im, err := parseInotify(fi)
		if err != nil || len(im) != 1 {
			return m, fmt.Errorf("inode mark: %v", err)
		}
		m.inode = im[0]
	case hasMnt:
		m.typ, m.mntID = imagepb.FanotifyMark_MOUNT, kv["mnt_id"]
	case hasSdev:
		m.typ = imagepb.FanotifyMark_FILESYSTEM
		m.inode.Sdev = uint32(kv["sdev"])
	default:
		return m, errors.New("mark of an unknown kind")
	}
	m.m.Type = m.typ
	return m, nil
}

// fanotify records a fanotify group (see the file comment).
func (t *Table) fanotify(f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
	fd, cp, link, fi := d.fd, d.cp, d.link, d.fi
	flags, eventFlags, marks, err := parseFanotify(fi)
	if err != nil {
		return 0, &UnsupportedError{Fd: fd, Link: link, Kind: err.Error()}
	}
	if flags&fanClassMask != 0 {
		return 0, &UnsupportedError{Fd: fd, Link: link, Kind: fmt.Sprintf("fanotify group of a permission class (init flags %#x): pending permission events cannot be carried", flags)}
	}
	q, err := unix.IoctlGetInt(cp, unix.TIOCINQ) // FIONREAD: bytes of events queued
	if err != nil {
		return 0, fmt.Errorf("fd %d (%s): fanotify FIONREAD: %w", fd, link, err)
	}
	if q > 0 {
		return 0, &UnsupportedError{Fd: fd, Link: link, Kind: fmt.Sprintf("fanotify group with events queued (%d bytes): queued events cannot be carried", q)}
	}
	g := &imagepb.FanotifyGroup{InitFlags: flags, EventFFlags: eventFlags}
	var mounts []mountinfo.Info
	for i := len(marks) - 1; i >= 0; i-- { // oldest first
		m := &marks[i]
		if m.m.Mflags&^fanMarkUserFlags != 0 {
			return 0, &UnsupportedError{Fd: fd, Link: link, Kind: fmt.Sprintf("fanotify mark with flags %#x", m.m.Mflags)}
		}
		if mounts == nil && m.typ != imagepb.FanotifyMark_MOUNT {
			if mounts, err = readMounts(); err != nil {
				return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
			}
		}
		if err := resolveFanotifyMark(m, mounts); err != nil {
			return 0, &UnsupportedError{Fd: fd, Link: link, Kind: err.Error()}
		}
		g.Marks = append(g.Marks, m.m)
	}
	f.Kind = imagepb.FileKind_FILE_FANOTIFY
	f.Flags &= anonStatusFlags
	f.Fanotify = g
	return t.add("", f), nil
}

// resolveFanotifyMark finds the path of a mark's object.
func resolveFanotifyMark(m *fanotifyMark, mounts []mountinfo.Info) error {
	switch m.typ {
	case imagepb.FanotifyMark_INODE:
		if m.inode.Handle == nil {
			return fmt.Errorf("fanotify mark on a file system without file handles (inode %d)", m.inode.Ino)
		}
		p, err := handlePath(m.inode, mounts)
		if err != nil {
			return fmt.Errorf("fanotify inode mark: %v", err)
		}
		m.m.Path, m.m.Dev, m.m.Ino = p, m.inode.Dev(), m.inode.Ino
	case imagepb.FanotifyMark_MOUNT:
		p, err := mountPathByID(m.mntID)
		if err != nil {
			return fmt.Errorf("fanotify mount mark: %v", err)
		}
		m.m.Path = p
	case imagepb.FanotifyMark_FILESYSTEM:
		dev := m.inode.Dev()
		for _, mp := range mounts {
			var st unix.Stat_t
			if mp.Dev() == dev && unix.Stat(mp.MountPoint, &st) == nil && st.Dev == dev {
				m.m.Path, m.m.Dev = mp.MountPoint, dev
				return nil
			}
		}
		return fmt.Errorf("fanotify file system mark: no mount of device %d:%d in our mount namespace", unix.Major(dev), unix.Minor(dev))
	}
	return nil
}

// mountPathByID returns the mount point of mount id (our mount namespace),
// checked to lead to that mount (not hidden under another).
func mountPathByID(id uint64) (string, error) {
	// an id past int's range becomes negative and matches no mount
	found, err := mountinfo.Self(mountinfo.ID(int(id)))
	if err != nil {
		return "", err
	}
	if len(found) == 0 {
		return "", fmt.Errorf("mount %d is not in our mount namespace", id)
	}
	p := found[0].MountPoint
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err != nil {
		return "", fmt.Errorf("mount %d at %s: %w", id, p, err)
	}
	if stx.Mnt_id != id {
		return "", fmt.Errorf("mount %d at %s is hidden under mount %d", id, p, stx.Mnt_id)
	}
	return p, nil
}

func init() {
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_FANOTIFY, anonInode: "fanotify",
		dump:     (*Table).fanotify,
		check:    checkAlone(checkFanotify),
		open:     openAlone(openFanotify),
		describe: func(f *imagepb.FileEntry) string { return describeFanotify(f.Fanotify) }})
}

// describeFanotify tells a fanotify group's flags and marks.
func describeFanotify(g *imagepb.FanotifyGroup) string {
	if g == nil {
		return ""
	}
	var ms []string
	for _, m := range g.Marks {
		s := fmt.Sprintf("%s mask %#x", m.Path, m.Mask)
		if m.Type != imagepb.FanotifyMark_INODE {
			s = strings.ToLower(m.Type.String()) + " " + s
		}
		if m.IgnoredMask != 0 || m.Mflags != 0 {
			s += fmt.Sprintf(" ignored %#x mflags %#x", m.IgnoredMask, m.Mflags)
		}
		ms = append(ms, s)
	}
	return fmt.Sprintf(" init flags %#x event flags %#x, %d mark(s) [%s]", g.InitFlags, g.EventFFlags, len(g.Marks), strings.Join(ms, ", "))
}

// openFanotify creates the group with its dumped flags and adds its marks
// back, oldest first (fdinfo then lists them as at dump).
func openFanotify(f *imagepb.FileEntry) (int, error) {
	g := f.Fanotify
	if g == nil {
		return -1, errors.New("fanotify entry without its description")
	}
	if g.InitFlags&fanClassMask != 0 {
		return -1, fmt.Errorf("fanotify: permission class in init flags %#x", g.InitFlags)
	}
	// the group keeps FAN_CLOEXEC as given; our copy must not leak into a fork
	syscall.ForkLock.RLock()
	fd, err := unix.FanotifyInit(uint(g.InitFlags), uint(g.EventFFlags))
	if err == nil {
		unix.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return -1, fmt.Errorf("fanotify_init(%#x, %#x): %w", g.InitFlags, g.EventFFlags, err)
	}
	for i, m := range g.Marks {
		if err := addFanotifyMark(fd, m); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("fanotify mark %d: %w", i, err)
		}
	}
	if err := unix.SetNonblock(fd, f.Flags&unix.O_NONBLOCK != 0); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// addFanotifyMark adds one mark: its mask, then its ignore mask.
func addFanotifyMark(fd int, m *imagepb.FanotifyMark) error {
	if m.Mflags&^fanMarkUserFlags != 0 {
		return fmt.Errorf("mark flags %#x", m.Mflags)
	}
	base := uint(unix.FAN_MARK_ADD) | uint(m.Mflags&unix.FAN_MARK_EVICTABLE)
	switch m.Type {
	case imagepb.FanotifyMark_INODE:
		var st unix.Stat_t
		if unix.Lstat(m.Path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			base |= unix.FAN_MARK_DONT_FOLLOW
		}
	case imagepb.FanotifyMark_MOUNT:
		base |= unix.FAN_MARK_MOUNT
	case imagepb.FanotifyMark_FILESYSTEM:
		base |= unix.FAN_MARK_FILESYSTEM
	default:
		return fmt.Errorf("mark type %v", m.Type)
	}
	if m.Mask != 0 {
		if err := unix.FanotifyMark(fd, base, uint64(m.Mask), unix.AT_FDCWD, m.Path); err != nil {
			return fmt.Errorf("%s mask %#x on %s: %w", m.Type, m.Mask, m.Path, err)
		}
	}
	if m.IgnoredMask != 0 || m.Mflags&(unix.FAN_MARK_IGNORED_SURV_MODIFY|unix.FAN_MARK_IGNORE) != 0 {
		fl := base | uint(m.Mflags&unix.FAN_MARK_IGNORED_SURV_MODIFY)
		if m.Mflags&unix.FAN_MARK_IGNORE == unix.FAN_MARK_IGNORE {
			fl |= unix.FAN_MARK_IGNORE
		} else {
			fl |= unix.FAN_MARK_IGNORED_MASK
		}
		if err := unix.FanotifyMark(fd, fl, uint64(m.IgnoredMask), unix.AT_FDCWD, m.Path); err != nil {
			return fmt.Errorf("%s ignore mask %#x on %s: %w", m.Type, m.IgnoredMask, m.Path, err)
		}
	}
	return nil
}

// checkFanotify verifies that every marked inode is still at its path.
func checkFanotify(f *imagepb.FileEntry) error {
	if f.Fanotify == nil {
		return errors.New("fanotify entry without its description")
	}
	for i, m := range f.Fanotify.Marks {
		var st unix.Stat_t
		if err := unix.Lstat(m.Path, &st); err != nil {
			return fmt.Errorf("fanotify mark %d: %s: %w", i, m.Path, err)
		}
		if m.Type == imagepb.FanotifyMark_INODE && (st.Dev != m.Dev || st.Ino != m.Ino) {
			return fmt.Errorf("fanotify mark %d: %s is no longer the marked inode", i, m.Path)
		}
	}
	return nil
}

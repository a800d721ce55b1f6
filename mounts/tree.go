package mounts

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/ctr-cr/ctr-cr/internal/mountinfo"
)

// TreeVersion is the version of the saved Tree format.
const TreeVersion = 1

// Limits applied by Validate to data read from an image.
const (
	MaxMounts     = 16384
	MaxPathLen    = 4096
	MaxOptionLen  = 256
	MaxTmpfsBytes = 1 << 50 // 1 PiB: larger tmpfs size= values are refused
	MaxTmpfsNodes = 1 << 40
)

var (
	// ErrUnsupportedFS is returned (wrapped, naming mount point and type) for a
	// mount ctr-cr cannot recreate.
	ErrUnsupportedFS = errors.New("unsupported filesystem")
	// ErrInvalidTree is returned (wrapped) by Validate.
	ErrInvalidTree = errors.New("invalid mount tree")
)

// Kind says how a mount is recreated at restore.
type Kind string

const (
	KindRoot     Kind = "root"     // the container's root mount; made by the runtime
	KindExternal Kind = "external" // host path or rootfs-like fs; source given at restore by key
	KindBind     Kind = "bind"     // bind of a part of another mount of the tree (BindOf, BindPath)
	KindTmpfs    Kind = "tmpfs"    // new tmpfs with FSOptions, contents saved by SaveTmpfs
	KindProc     Kind = "proc"
	KindSysfs    Kind = "sysfs"
	KindDevpts   Kind = "devpts"
	KindMqueue   Kind = "mqueue"
	KindCgroup   Kind = "cgroup"
	KindCgroup2  Kind = "cgroup2"
)

// newFSKinds are the kinds recreated as a new filesystem of type FSType.
var newFSKinds = map[Kind]bool{KindTmpfs: true, KindProc: true, KindSysfs: true, KindDevpts: true, KindMqueue: true, KindCgroup: true, KindCgroup2: true}

// rootfsLike are filesystem types whose mounts (other than the root) are
// external: their contents belong to the host and are given back at restore.
var rootfsLike = map[string]bool{"overlay": true, "ext4": true, "ext3": true, "ext2": true, "xfs": true, "btrfs": true}

// Flags are the per-mount flags (mount_setattr(2) attributes).
type Flags struct {
	ReadOnly    bool   `json:"ro,omitempty"`
	NoSuid      bool   `json:"nosuid,omitempty"`
	NoDev       bool   `json:"nodev,omitempty"`
	NoExec      bool   `json:"noexec,omitempty"`
	NoDiratime  bool   `json:"nodiratime,omitempty"`
	NoSymfollow bool   `json:"nosymfollow,omitempty"`
	Atime       string `json:"atime,omitempty"` // "relatime" (default when empty), "noatime" or "strictatime"
}

// Propagation is a mount's propagation type. Peer group numbers are kept for
// information only: they cannot be recreated on another host.
type Propagation struct {
	Shared     bool `json:"shared,omitempty"`
	Slave      bool `json:"slave,omitempty"`
	Unbindable bool `json:"unbindable,omitempty"`
	PeerGroup  int  `json:"peer_group,omitempty"`
	MasterID   int  `json:"master,omitempty"`
}

// Mount is one saved mount. Mount points are absolute and clean, relative to
// the container's root.
type Mount struct {
	ID          int         `json:"id"`
	ParentID    int         `json:"parent_id"`
	MountPoint  string      `json:"mount_point"`
	Kind        Kind        `json:"kind"`
	FSType      string      `json:"fstype"`
	Source      string      `json:"source,omitempty"` // as shown in mountinfo; informational
	Root        string      `json:"root,omitempty"`   // root inside the filesystem; informational
	External    string      `json:"external,omitempty"`
	BindOf      int         `json:"bind_of,omitempty"`   // KindBind: ID of the source mount
	BindPath    string      `json:"bind_path,omitempty"` // KindBind: clean relative path in the source ("." for its root)
	Flags       Flags       `json:"flags"`
	Propagation Propagation `json:"propagation"`
	// FSOptions are the superblock options needed to recreate a new
	// filesystem ("size=65536k", "mode=755", "hidepid=2", "memory"...), in
	// mountinfo order; only options on a per-type allow list are kept.
	FSOptions     []string `json:"fs_options,omitempty"`
	SuperReadOnly bool     `json:"super_ro,omitempty"`
}

// Tree is the saved mount namespace of a process, as seen from its root:
// Mounts are ordered so that a mount's parent and bind source come before it,
// and Mounts[0] is the root mount.
type Tree struct {
	Version int     `json:"version"`
	Mounts  []Mount `json:"mounts"`
}

// TreeOptions drive the classification of BuildTree.
type TreeOptions struct {
	// Externals are the destinations of config.json bind mounts (and of
	// linux.devices nodes when the runtime bind-mounts them, as in user
	// namespaces) inside the container, with symlinks already resolved in
	// the rootfs as the runtime did; a mount at one of them is KindExternal
	// keyed by the (clean) destination.
	Externals []string
}

// ReadTree reads /proc/PID/mountinfo and classifies it (BuildTree).
func ReadTree(pid int, opts TreeOptions) (*Tree, error) {
	infos, err := mountinfo.ForPid(pid, nil)
	if err != nil {
		return nil, fmt.Errorf("mount tree of pid %d: %w", pid, err)
	}
	t, err := BuildTree(infos, opts)
	if err != nil {
		return nil, fmt.Errorf("mount tree of pid %d: %w", pid, err)
	}
	return t, nil
}

// BuildTree classifies the mounts of one mountinfo (as seen from the
// process's root) and orders them parents first. The root mount is the mount
// at "/" whose parent is not visible; every other mount must have a visible
// parent. Each mount, in this order of rules, is: KindRoot; KindExternal when
// its mount point is in opts.Externals; KindBind when another mount shows the
// same filesystem (major:minor) with a root that contains this mount's root;
// KindExternal keyed "/dev/console" for a devpts bind there (the console pty);
// a new filesystem for tmpfs (root "/"), proc, sysfs, devpts, mqueue (root
// "/") and cgroup/cgroup2 (any root: the target's cgroup namespace decides);
// KindExternal for other rootfs-like filesystems (overlay, ext2/3/4, xfs,
// btrfs) keyed by their mount point. Anything else is ErrUnsupportedFS naming
// the mount point and the type.
func BuildTree(infos []mountinfo.Info, opts TreeOptions) (*Tree, error) {
	ext := map[string]bool{}
	for _, e := range opts.Externals {
		ext[path.Clean("/"+e)] = true
	}
	byID := map[int]int{}
	for i, in := range infos {
		if _, dup := byID[in.ID]; dup {
			return nil, fmt.Errorf("%w: mount ID %d appears twice (at %s)", ErrInvalidTree, in.ID, in.MountPoint)
		}
		byID[in.ID] = i
	}
	rootIdx := -1
	for i, in := range infos {
		if _, ok := byID[in.Parent]; ok && in.Parent != in.ID {
			continue
		}
		if in.MountPoint != "/" || rootIdx >= 0 {
			return nil, fmt.Errorf("%w: mount %s (id %d): parent %d is not visible from the process's root", ErrInvalidTree, in.MountPoint, in.ID, in.Parent)
		}
		rootIdx = i
	}
	if rootIdx < 0 {
		return nil, fmt.Errorf("%w: no root mount (the process's root is not a mount point)", ErrInvalidTree)
	}

	mounts := make([]Mount, len(infos))
	deps := make([][]int, len(infos))
	for i, in := range infos {
		m := Mount{
			ID: in.ID, ParentID: in.Parent, MountPoint: path.Clean(in.MountPoint),
			FSType: in.FSType, Source: in.Source, Root: in.Root,
			Flags: parseFlags(in.Options),
			Propagation: Propagation{
				Shared: in.Shared != 0, Slave: in.Master != 0, Unbindable: in.Unbindable,
				PeerGroup: in.Shared, MasterID: in.Master,
			},
		}
		if i != rootIdx {
			deps[i] = append(deps[i], byID[in.Parent])
		}
		where := fmt.Sprintf("mount %s (%s, root %s)", m.MountPoint, in.FSType, in.Root)
		switch src := bindSource(infos, i); {
		case i == rootIdx:
			m.Kind = KindRoot
			m.External = "/"
		case ext[m.MountPoint]:
			m.Kind = KindExternal
			m.External = m.MountPoint
		case src >= 0:
			m.Kind = KindBind
			m.BindOf = infos[src].ID
			m.BindPath = relUnder(infos[src].Root, in.Root)
			deps[i] = append(deps[i], src)
		case m.MountPoint == "/dev/console" && in.FSType == "devpts" && in.Root != "/":
			// The console: a bind of the runtime's pty, made again by the
			// runtime (or from --console-socket) at restore.
			m.Kind = KindExternal
			m.External = m.MountPoint
		case newFSKinds[Kind(in.FSType)]:
			m.Kind = Kind(in.FSType)
			if in.Root != "/" && m.Kind != KindCgroup && m.Kind != KindCgroup2 {
				return nil, fmt.Errorf("%w: %s is a bind of a part of a %s outside the container; name it as an external mount", ErrUnsupportedFS, where, in.FSType)
			}
			m.FSOptions = fsOptions(m.Kind, in.SuperOptions)
			m.SuperReadOnly = mountinfo.HasOption(in.SuperOptions, "ro")
		case rootfsLike[in.FSType]:
			m.Kind = KindExternal
			m.External = m.MountPoint
		default:
			return nil, fmt.Errorf("%w: %s: cannot recreate it (not an external mount)", ErrUnsupportedFS, where)
		}
		mounts[i] = m
	}

	// Order: parents and bind sources first, mountinfo order otherwise.
	state := make([]byte, len(infos)) // 0 new, 1 visiting, 2 done
	t := &Tree{Version: TreeVersion}
	var visit func(i int) error
	visit = func(i int) error {
		switch state[i] {
		case 1:
			return fmt.Errorf("%w: mount %s (id %d) depends on itself", ErrInvalidTree, mounts[i].MountPoint, mounts[i].ID)
		case 2:
			return nil
		}
		state[i] = 1
		for _, d := range deps[i] {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[i] = 2
		t.Mounts = append(t.Mounts, mounts[i])
		return nil
	}
	if err := visit(rootIdx); err != nil {
		return nil, err
	}
	for i := range infos {
		if err := visit(i); err != nil {
			return nil, err
		}
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return t, nil
}

// bindSource returns the index of the mount that infos[i] is a bind of, or -1:
// the mount of the same filesystem whose root contains infos[i].Root, the
// longest such root, the earliest on a tie; a mount with the same root is a
// source only when it comes earlier (so that two mounts never source each
// other).
func bindSource(infos []mountinfo.Info, i int) int {
	me := infos[i]
	best := -1
	for j, o := range infos {
		if j == i || o.Major != me.Major || o.Minor != me.Minor || !strings.HasPrefix(o.Root, "/") {
			continue
		}
		if o.Root == me.Root && j > i {
			continue
		}
		if !pathUnder(o.Root, me.Root) {
			continue
		}
		if best < 0 || len(o.Root) > len(infos[best].Root) {
			best = j
		}
	}
	return best
}

// pathUnder reports whether p is base or below it.
func pathUnder(base, p string) bool {
	return base == "/" || p == base || strings.HasPrefix(p, base+"/")
}

// relUnder returns p relative to base ("." when equal); p is under base.
func relUnder(base, p string) string {
	r := strings.TrimPrefix(strings.TrimPrefix(p, base), "/")
	if r == "" {
		return "."
	}
	return path.Clean(r)
}

func parseFlags(opts string) Flags {
	var f Flags
	for _, o := range strings.Split(opts, ",") {
		switch o {
		case "ro":
			f.ReadOnly = true
		case "nosuid":
			f.NoSuid = true
		case "nodev":
			f.NoDev = true
		case "noexec":
			f.NoExec = true
		case "nodiratime":
			f.NoDiratime = true
		case "nosymfollow":
			f.NoSymfollow = true
		case "noatime":
			f.Atime = "noatime"
		case "relatime":
			f.Atime = "relatime"
		}
	}
	if f.Atime == "" {
		f.Atime = "strictatime" // mountinfo shows neither relatime nor noatime
	}
	return f
}

// allowedOpts are the superblock options kept per kind ("*" = any simple
// controller name, for cgroup v1).
var allowedOpts = map[Kind]map[string]bool{
	KindTmpfs:   {"size": true, "mode": true, "uid": true, "gid": true, "nr_inodes": true, "huge": true, "inode64": true, "inode32": true, "noswap": true},
	KindProc:    {"hidepid": true, "gid": true, "subset": true},
	KindDevpts:  {"mode": true, "ptmxmode": true, "gid": true, "uid": true, "max": true},
	KindSysfs:   {},
	KindMqueue:  {},
	KindCgroup:  {"*": true, "name": true, "none": true, "xattr": true, "noprefix": true, "clone_children": true, "cpuset_v2_mode": true, "release_agent": false},
	KindCgroup2: {"nsdelegate": true, "memory_recursiveprot": true, "favordynmods": true, "memory_localevents": true, "memory_hugetlb_accounting": true, "pids_localevents": true},
}

func fsOptions(k Kind, super string) []string {
	var out []string
	for _, o := range strings.Split(super, ",") {
		key, _, _ := strings.Cut(o, "=")
		if key == "" || key == "rw" || key == "ro" {
			continue
		}
		if optionAllowed(k, key) {
			out = append(out, o)
		}
	}
	return out
}

func optionAllowed(k Kind, key string) bool {
	allow := allowedOpts[k]
	if v, ok := allow[key]; ok {
		return v
	}
	return allow["*"] && isName(key)
}

func isName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Tmpfs returns the mounts whose contents SaveTmpfs must save.
func (t *Tree) Tmpfs() []Mount {
	var out []Mount
	for _, m := range t.Mounts {
		if m.Kind == KindTmpfs {
			out = append(out, m)
		}
	}
	return out
}

// Validate checks a tree read from an image before anything uses it: format
// version, counts, clean absolute paths without "..", known kinds with their
// filesystem type, references to earlier mounts (parents, bind sources),
// allowed options with sane values (tmpfs size, inodes, mode, ids).
func (t *Tree) Validate() error {
	if t == nil {
		return fmt.Errorf("%w: nil", ErrInvalidTree)
	}
	if t.Version != TreeVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrInvalidTree, t.Version, TreeVersion)
	}
	if len(t.Mounts) == 0 || len(t.Mounts) > MaxMounts {
		return fmt.Errorf("%w: %d mounts (1..%d)", ErrInvalidTree, len(t.Mounts), MaxMounts)
	}
	seen := map[int]*Mount{}
	for i := range t.Mounts {
		m := &t.Mounts[i]
		bad := func(format string, a ...any) error {
			return fmt.Errorf("%w: mount %q (id %d): %s", ErrInvalidTree, m.MountPoint, m.ID, fmt.Sprintf(format, a...))
		}
		if err := checkPath(m.MountPoint); err != nil {
			return bad("mount point: %v", err)
		}
		if _, dup := seen[m.ID]; dup {
			return bad("duplicate id")
		}
		if i == 0 {
			if m.Kind != KindRoot || m.MountPoint != "/" {
				return bad("the first mount must be the root mount at /")
			}
		} else {
			if m.Kind == KindRoot {
				return bad("a second root mount")
			}
			p, ok := seen[m.ParentID]
			if !ok {
				return bad("parent %d is not an earlier mount", m.ParentID)
			}
			if !pathUnder(p.MountPoint, m.MountPoint) {
				return bad("not under its parent's mount point %q", p.MountPoint)
			}
		}
		if len(m.FSType) == 0 || len(m.FSType) > 64 || strings.ContainsAny(m.FSType, " ,\x00/") {
			return bad("filesystem type %q", m.FSType)
		}
		switch a := m.Flags.Atime; a {
		case "", "relatime", "noatime", "strictatime":
		default:
			return bad("atime %q", a)
		}
		switch m.Kind {
		case KindRoot:
		case KindExternal:
			if err := checkPath(m.External); err != nil {
				return bad("external key: %v", err)
			}
		case KindBind:
			src, ok := seen[m.BindOf]
			if !ok {
				return bad("bind source %d is not an earlier mount", m.BindOf)
			}
			_ = src
			if m.BindPath == "" || len(m.BindPath) > MaxPathLen || path.IsAbs(m.BindPath) || path.Clean(m.BindPath) != m.BindPath ||
				m.BindPath == ".." || strings.HasPrefix(m.BindPath, "../") || strings.Contains(m.BindPath, "\x00") {
				return bad("bind path %q", m.BindPath)
			}
		default:
			if !newFSKinds[m.Kind] {
				return bad("unknown kind %q", m.Kind)
			}
			if string(m.Kind) != m.FSType {
				return bad("kind %s with filesystem type %s", m.Kind, m.FSType)
			}
		}
		if len(m.FSOptions) > 0 && !newFSKinds[m.Kind] {
			return bad("filesystem options on a %s mount", m.Kind)
		}
		if len(m.FSOptions) > 64 {
			return bad("%d filesystem options", len(m.FSOptions))
		}
		for _, o := range m.FSOptions {
			if err := checkOption(m.Kind, o); err != nil {
				return bad("%v", err)
			}
		}
		seen[m.ID] = m
	}
	return nil
}

func checkPath(p string) error {
	switch {
	case p == "" || len(p) > MaxPathLen:
		return fmt.Errorf("length %d", len(p))
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("%q is not absolute", p)
	case strings.Contains(p, "\x00"):
		return fmt.Errorf("%q holds a NUL byte", p)
	case path.Clean(p) != p:
		return fmt.Errorf("%q is not clean", p)
	}
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return fmt.Errorf("%q holds \"..\"", p)
		}
	}
	return nil
}

func checkOption(k Kind, o string) error {
	if len(o) > MaxOptionLen || strings.ContainsAny(o, ",\x00\n ") {
		return fmt.Errorf("option %q", o)
	}
	key, val, hasVal := strings.Cut(o, "=")
	if !optionAllowed(k, key) {
		return fmt.Errorf("option %q not allowed on %s", key, k)
	}
	num := func(max uint64, base int) error {
		v, err := strconv.ParseUint(val, base, 64)
		if err != nil || v > max {
			return fmt.Errorf("option %q: bad value", o)
		}
		return nil
	}
	switch {
	case k == KindTmpfs && key == "size":
		if strings.HasSuffix(val, "%") {
			return num100(o, strings.TrimSuffix(val, "%"))
		}
		mult := uint64(1)
		switch {
		case strings.HasSuffix(val, "k"):
			mult = 1 << 10
		case strings.HasSuffix(val, "m"):
			mult = 1 << 20
		case strings.HasSuffix(val, "g"):
			mult = 1 << 30
		case strings.HasSuffix(val, "t"):
			mult = 1 << 40
		}
		digits := strings.TrimRight(val, "kmgt")
		v, err := strconv.ParseUint(digits, 10, 64)
		if err != nil || len(val)-len(digits) > 1 || v > MaxTmpfsBytes/mult {
			return fmt.Errorf("option %q: bad or absurd size", o)
		}
	case k == KindTmpfs && key == "nr_inodes":
		digits := strings.TrimRight(val, "kmg")
		if len(val)-len(digits) > 1 {
			return fmt.Errorf("option %q: bad value", o)
		}
		val = digits
		return num(MaxTmpfsNodes, 10)
	case key == "mode" || key == "ptmxmode":
		return num(07777, 8)
	case key == "uid" || key == "gid" || key == "max":
		return num(1<<32-1, 10)
	case key == "name":
		if !isName(strings.ReplaceAll(val, "-", "_")) {
			return fmt.Errorf("option %q: bad name", o)
		}
	case hasVal && key != "huge" && key != "hidepid" && key != "subset":
		return fmt.Errorf("option %q takes no value", o)
	case key == "huge" || key == "hidepid" || key == "subset":
		if !isName(val) {
			return fmt.Errorf("option %q: bad value", o)
		}
	}
	return nil
}

func num100(o, val string) error {
	v, err := strconv.ParseUint(val, 10, 64)
	if err != nil || v > 100 {
		return fmt.Errorf("option %q: bad percentage", o)
	}
	return nil
}

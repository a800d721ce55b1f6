package container

import (
	"errors"
	"fmt"
	"path"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/internal/capnames"
	"github.com/ctr-cr/ctr-cr/internal/mountinfo"
	"github.com/ctr-cr/ctr-cr/mounts"
)

// The privilege ceiling of a restore: the sandbox is created from a
// privileged config (privbundle.go) and the image then says what each task
// and mount gets back. An edited image must not make the container more
// privileged than `RUNTIME run` of the same bundle would: these checks hold
// the image's tasks (checkTaskCeiling, before anything is created) and the
// mount tree that container.json made (checkMountCeiling, after
// mounts.Apply) to the bundle's config.json.

// ErrAboveConfig is returned (wrapped, naming the task or mount and what
// exceeds the config) when the image would give the container more than
// its config.json allows.
var ErrAboveConfig = errors.New("more privileged than the bundle's config.json allows")

// taskCeiling is what config.json lets any task of the container have.
type taskCeiling struct {
	// caps per set: the config's bounding set plus the config's own value
	// of that set (a task can lose capabilities, and gain back none beyond
	// its bounding set)
	inh, prm, eff, bnd, amb uint64
	nnp                     bool // every task keeps no_new_privs
	seccomp                 bool // every task has at least one filter
	// uid/gid (as the host sees them) every task has for all of its real,
	// effective, saved and fs ids, when the config leaves no way to change
	// them: no_new_privs (no set-user-ID exec) and no CAP_SETUID
	// (CAP_SETGID) in the bounding set; -1 when not fixed
	uid, gid int64
	// hardLimit is, per resource (RLIMIT_*), the highest hard limit a
	// task may have when the config leaves no way to raise one (no
	// CAP_SYS_RESOURCE in the bounding set): process.rlimits' hard value,
	// or for a resource the config does not list, the one the runtime
	// inherits from ctr-cr. nil when CAP_SYS_RESOURCE is there.
	hardLimit map[int]uint64
}

// ceilingOf reads the task ceiling from the config's process and
// linux.seccomp. An unknown capability name in the config is an error:
// the ceiling would otherwise be guessed.
func ceilingOf(s *specs.Spec) (taskCeiling, error) {
	var c taskCeiling
	if s.Process == nil {
		return c, errors.New("config.json: no process")
	}
	c.nnp = s.Process.NoNewPrivileges
	c.seccomp = s.Linux != nil && s.Linux.Seccomp != nil
	c.uid, c.gid = -1, -1
	if c.nnp && !hasCap(s, "CAP_SETUID") {
		c.uid = hostID(s, s.Process.User.UID, func(l *specs.Linux) []specs.LinuxIDMapping { return l.UIDMappings })
	}
	if c.nnp && !hasCap(s, "CAP_SETGID") {
		c.gid = hostID(s, s.Process.User.GID, func(l *specs.Linux) []specs.LinuxIDMapping { return l.GIDMappings })
	}
	if !hasCap(s, "CAP_SYS_RESOURCE") {
		var err error
		if c.hardLimit, err = hardLimits(s.Process.Rlimits); err != nil {
			return c, err
		}
	}
	pc := s.Process.Capabilities
	if pc == nil {
		return c, nil
	}
	masks := []struct {
		names []string
		out   *uint64
	}{{pc.Bounding, &c.bnd}, {pc.Inheritable, &c.inh}, {pc.Permitted, &c.prm}, {pc.Effective, &c.eff}, {pc.Ambient, &c.amb}}
	for _, m := range masks {
		v, err := capnames.Mask(m.names)
		if err != nil {
			return c, fmt.Errorf("config.json: process.capabilities: %w", err)
		}
		*m.out = v
	}
	c.inh |= c.bnd
	c.prm |= c.bnd
	c.eff |= c.bnd
	c.amb |= c.bnd
	return c, nil
}

// check compares one thread's saved credentials and seccomp state with
// the ceiling; the error names pid, tid and the field.
func (c taskCeiling) check(pid int, t *imagepb.ThreadCore) error {
	where := fmt.Sprintf("pid %d", pid)
	if int(t.Tid) != pid {
		where = fmt.Sprintf("pid %d (tid %d)", pid, t.Tid)
	}
	cr := t.Creds
	if cr == nil {
		return fmt.Errorf("core-%d.img: %s: no credentials: %w", pid, where, image.ErrCorrupt)
	}
	sets := []struct {
		name       string
		have, ceil uint64
	}{
		{"permitted", cr.CapPrm, c.prm}, {"effective", cr.CapEff, c.eff}, {"inheritable", cr.CapInh, c.inh},
		{"bounding", cr.CapBnd, c.bnd}, {"ambient", cr.CapAmb, c.amb},
	}
	for _, s := range sets {
		if extra := s.have &^ s.ceil; extra != 0 {
			return fmt.Errorf("%s: %s capabilities %s: %w (not in process.capabilities.bounding)", where, s.name, capList(extra), ErrAboveConfig)
		}
	}
	if err := checkIDs(where, "uid", "process.user.uid", "CAP_SETUID", cr.Uids, c.uid); err != nil {
		return err
	}
	if err := checkIDs(where, "gid", "process.user.gid", "CAP_SETGID", cr.Gids, c.gid); err != nil {
		return err
	}
	if c.nnp && !cr.NoNewPrivs {
		return fmt.Errorf("%s: no_new_privs is off: %w (process.noNewPrivileges is true)", where, ErrAboveConfig)
	}
	if c.seccomp && len(t.Seccomp) == 0 && !t.SeccompStrict {
		return fmt.Errorf("%s: no seccomp filter: %w (linux.seccomp is set)", where, ErrAboveConfig)
	}
	return nil
}

// checkIDs checks that each of a task's ids is want (unless want is -1).
func checkIDs(where, kind, field, capName string, ids []uint32, want int64) error {
	if want < 0 {
		return nil
	}
	for _, id := range ids {
		if int64(id) != want {
			return fmt.Errorf("%s: %ss %v: %w (%s is %d as the host sees it, and with no_new_privs and no %s in process.capabilities.bounding no task can change it)", where, kind, ids, ErrAboveConfig, field, want, capName)
		}
	}
	return nil
}

// hostID is the config's container id as the host sees it (what the
// image records): the same without a user namespace of the container's
// own, mapped through the config's id mappings with one; -1 (no check)
// when it cannot be known (a user namespace joined by path, an id no
// mapping covers).
func hostID(s *specs.Spec, id uint32, maps func(*specs.Linux) []specs.LinuxIDMapping) int64 {
	if s.Linux == nil {
		return int64(id)
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type != specs.UserNamespace {
			continue
		}
		if ns.Path != "" {
			return -1
		}
		for _, m := range maps(s.Linux) {
			if id >= m.ContainerID && uint64(id) < uint64(m.ContainerID)+uint64(m.Size) {
				return int64(m.HostID) + int64(id-m.ContainerID)
			}
		}
		return -1
	}
	return int64(id)
}

// capList names the capabilities of mask, numbers past capnames' list as
// CAP_N.
func capList(mask uint64) string {
	var out []string
	for i := 0; i < 64; i++ {
		if mask&(1<<i) == 0 {
			continue
		}
		if i < len(capnames.Names) {
			out = append(out, capnames.Names[i])
		} else {
			out = append(out, fmt.Sprintf("CAP_%d", i))
		}
	}
	return strings.Join(out, ",")
}

// checkTaskCeiling checks every live task of the image in dir against the
// config's ceiling, before the restore creates anything. It returns the
// oldest seccomp filter of the image's init (the root task's leader
// thread): the one the runtime installed from linux.seccomp, which crun
// also keeps for the processes `crun exec` starts (execstate.go).
func checkTaskCeiling(s *specs.Spec, dir string) (initFilter []byte, err error) {
	c, err := ceilingOf(s)
	if err != nil {
		return nil, err
	}
	// the pages are hashed once, by the restore that reads them
	img, err := image.OpenWith(dir, image.OpenOptions{DeferPages: true})
	if err != nil {
		return nil, err
	}
	pst, err := img.Pstree()
	if err != nil {
		return nil, err
	}
	for _, e := range pst {
		if e.Zombie {
			continue
		}
		core, err := img.Core(int(e.Pid))
		if err != nil {
			return nil, err
		}
		for _, t := range core.Threads {
			if err := c.check(int(e.Pid), t); err != nil {
				return nil, err
			}
			if e.Ppid == 0 && t.Tid == e.Pid && len(t.Seccomp) > 0 {
				initFilter = t.Seccomp[0].Bpf
			}
		}
		if err := c.checkRlimits(int(e.Pid), core.Rlimits); err != nil {
			return nil, err
		}
	}
	return initFilter, nil
}

// mountView indexes one mountinfo (as seen from the container's root).
type mountView struct {
	byID     map[int]*mountInfo
	children map[int][]*mountInfo
	root     *mountInfo
}

// mountInfo is the part of a mountinfo line the ceiling looks at.
type mountInfo struct {
	ID, Parent         int
	MountPoint, FSType string
	ReadOnly           bool // the mount or its superblock
}

func newMountView(infos []mountInfo) *mountView {
	v := &mountView{byID: map[int]*mountInfo{}, children: map[int][]*mountInfo{}}
	for i := range infos {
		v.byID[infos[i].ID] = &infos[i]
	}
	for i := range infos {
		m := &infos[i]
		if _, ok := v.byID[m.Parent]; ok && m.Parent != m.ID {
			v.children[m.Parent] = append(v.children[m.Parent], m)
		} else if m.MountPoint == "/" && v.root == nil {
			v.root = m
		}
	}
	return v
}

// visible returns the mount a lookup of the clean absolute path p lands
// on: from the root mount down through the mount points that are p's
// prefixes, each time to the top of the stack of mounts there. Symlinks
// are not followed (mount points in mountinfo are resolved paths).
func (v *mountView) visible(p string) *mountInfo {
	cur := v.root
	if cur == nil {
		return nil
	}
	cur = v.top(cur, "/")
	if p == "/" {
		return cur
	}
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i := range parts {
		q := "/" + strings.Join(parts[:i+1], "/")
		cur = v.top(cur, q)
	}
	return cur
}

// top follows the mounts at q stacked on cur (a child of cur at q, then
// its child at q...) and returns the uppermost, or cur.
func (v *mountView) top(cur *mountInfo, q string) *mountInfo {
	for n := 0; n < len(v.byID); n++ {
		next := (*mountInfo)(nil)
		for _, c := range v.children[cur.ID] {
			if c.MountPoint == q {
				next = c // the last listed is the most recent
			}
		}
		if next == nil {
			break
		}
		cur = next
	}
	return cur
}

// protectedPath is a path config.json makes read-only or masked, with the
// config field that does.
type protectedPath struct {
	path, field string
	masked      bool
}

// protectedPaths lists the config's read-only and masked paths.
func protectedPaths(s *specs.Spec) []protectedPath {
	var out []protectedPath
	if s.Root != nil && s.Root.Readonly {
		out = append(out, protectedPath{path: "/", field: "root.readonly"})
	}
	for i, m := range s.Mounts {
		for _, o := range m.Options {
			if o == "ro" {
				out = append(out, protectedPath{path: path.Clean("/" + m.Destination), field: fmt.Sprintf("mounts[%d] (ro)", i)})
				break
			}
		}
	}
	if s.Linux != nil {
		for _, p := range s.Linux.ReadonlyPaths {
			out = append(out, protectedPath{path: path.Clean("/" + p), field: "linux.readonlyPaths"})
		}
		for _, p := range s.Linux.MaskedPaths {
			out = append(out, protectedPath{path: path.Clean("/" + p), field: "linux.maskedPaths", masked: true})
		}
	}
	return out
}

// hasCap reports whether the config's bounding set names capability name.
func hasCap(s *specs.Spec, name string) bool {
	if s.Process == nil || s.Process.Capabilities == nil {
		return false
	}
	for _, c := range s.Process.Capabilities.Bounding {
		if c == name {
			return true
		}
	}
	return false
}

// checkMountCeiling compares the container's mount tree as the runtime
// made it from config.json (before) with the tree after container.json's
// mounts were applied (after):
//   - a path the runtime made read-only (root.readonly, "ro" mounts,
//     linux.readonlyPaths) is still read-only where a lookup lands, neither
//     remounted read-write nor covered by a writable mount; under a
//     readonlyPath no new writable mount appears;
//   - a masked path is still covered by the runtime's mask (the same
//     mount, still read-only if it was), with nothing new mounted under it;
//   - no new proc or sysfs mount appears (it would show everything the
//     masked and read-only paths hide) unless the config's bounding set has
//     CAP_SYS_ADMIN, with which the container could have made it itself.
//
// Paths the runtime left alone (missing in the rootfs) are not checked.
func checkMountCeiling(s *specs.Spec, before, after []mountInfo) error {
	bv, av := newMountView(before), newMountView(after)
	if bv.root == nil || av.root == nil {
		return errors.New("mount tree: no root mount")
	}
	for _, pp := range protectedPaths(s) {
		b := bv.visible(pp.path)
		if b == nil || b.MountPoint != pp.path {
			continue // the runtime made no mount there
		}
		a := av.visible(pp.path)
		switch {
		case pp.masked:
			if a == nil || a.ID != b.ID || (b.ReadOnly && !a.ReadOnly) {
				return fmt.Errorf("mount %s: no longer masked after container.json's mounts: %w (%s; the runtime's mask is mount %d, a lookup now finds %s)", pp.path, ErrAboveConfig, pp.field, b.ID, describe(a))
			}
		default:
			if !b.ReadOnly {
				continue
			}
			if a == nil || !a.ReadOnly {
				return fmt.Errorf("mount %s: read-write after container.json's mounts: %w (%s)", pp.path, ErrAboveConfig, pp.field)
			}
		}
		if pp.path == "/" || pp.field != "linux.readonlyPaths" && !pp.masked {
			continue // new mounts under a read-only mount are the container's own
		}
		for _, m := range after {
			if _, old := bv.byID[m.ID]; old || !pathUnder(pp.path, m.MountPoint) || m.MountPoint == pp.path {
				continue
			}
			if pp.masked || !m.ReadOnly {
				return fmt.Errorf("mount %s: a new mount under %s from container.json: %w (%s)", m.MountPoint, pp.path, ErrAboveConfig, pp.field)
			}
		}
	}
	if hasCap(s, "CAP_SYS_ADMIN") {
		return nil
	}
	for _, m := range after {
		if _, old := bv.byID[m.ID]; old || (m.FSType != "proc" && m.FSType != "sysfs") {
			continue
		}
		return fmt.Errorf("mount %s: a new %s mount from container.json: %w (it shows what linux.maskedPaths and readonlyPaths hide, and without CAP_SYS_ADMIN in process.capabilities.bounding the container could not have made it)", m.MountPoint, m.FSType, ErrAboveConfig)
	}
	return nil
}

// pathUnder reports whether p is base or below it.
func pathUnder(base, p string) bool {
	return base == "/" || p == base || strings.HasPrefix(p, base+"/")
}

// readMounts reads the mount tree of pid, as seen from its root.
func readMounts(pid int) ([]mountInfo, error) {
	infos, err := mountinfo.ForPid(pid, nil)
	if err != nil {
		return nil, fmt.Errorf("mount tree of pid %d: %w", pid, err)
	}
	out := make([]mountInfo, len(infos))
	for i, in := range infos {
		out[i] = mountInfo{ID: in.ID, Parent: in.Parent, MountPoint: path.Clean(in.MountPoint), FSType: in.FSType,
			ReadOnly: mountinfo.HasOption(in.Options, "ro") || mountinfo.HasOption(in.SuperOptions, "ro")}
	}
	return out, nil
}

// describe names a mount for an error.
func describe(m *mountInfo) string {
	if m == nil {
		return "no mount"
	}
	ro := "rw"
	if m.ReadOnly {
		ro = "ro"
	}
	return fmt.Sprintf("mount %d (%s %s at %s)", m.ID, m.FSType, ro, m.MountPoint)
}

// precheckMounts refuses, before mounts.Apply changes anything, the saved
// mounts of tree that would break checkMountCeiling. It pairs them with
// the runtime's mounts (before) as Apply does (same mount point and type,
// the topmost first); the rest are the mounts Apply would create. Refused:
// a created mount at or above a path the runtime made read-only or
// masked (it covers it), a created mount under a masked path or a
// writable one under a readonlyPath, a read-only or mask mount of the
// runtime's that the tree makes writable, and a created proc or sysfs
// without CAP_SYS_ADMIN in the bounding set. checkMountCeiling still
// checks the result: this only refuses earlier, with nothing to undo.
func precheckMounts(s *specs.Spec, tree *mounts.Tree, before []mountInfo) error {
	bv := newMountView(before)
	if bv.root == nil || tree == nil || len(tree.Mounts) == 0 {
		return nil // Apply and checkMountCeiling refuse these
	}
	avail := map[string][]*mountInfo{}
	for i := range before {
		k := before[i].MountPoint + "\x00" + before[i].FSType
		avail[k] = append(avail[k], &before[i])
	}
	var created []*mounts.Mount
	matched := map[int]*mounts.Mount{} // runtime mount id -> saved mount
	for i := 1; i < len(tree.Mounts); i++ {
		m := &tree.Mounts[i]
		k := m.MountPoint + "\x00" + m.FSType
		if l := avail[k]; len(l) > 0 {
			matched[l[len(l)-1].ID] = m
			avail[k] = l[:len(l)-1]
		} else {
			created = append(created, m)
		}
	}
	ro := func(m *mounts.Mount) bool { return m.Flags.ReadOnly || m.SuperReadOnly }
	for _, pp := range protectedPaths(s) {
		b := bv.visible(pp.path)
		if b == nil || b.MountPoint != pp.path || !pp.masked && !b.ReadOnly {
			continue
		}
		if m := matched[b.ID]; m != nil && b.ReadOnly && !ro(m) {
			return fmt.Errorf("mount %s: container.json makes it read-write: %w (%s)", pp.path, ErrAboveConfig, pp.field)
		}
		for _, c := range created {
			switch {
			case pathUnder(c.MountPoint, pp.path):
				return fmt.Errorf("mount %s: container.json mounts a %s over %s: %w (%s)", c.MountPoint, c.FSType, pp.path, ErrAboveConfig, pp.field)
			case pp.path == "/" || !pathUnder(pp.path, c.MountPoint):
			case pp.masked || pp.field == "linux.readonlyPaths" && !ro(c):
				return fmt.Errorf("mount %s: a new mount under %s from container.json: %w (%s)", c.MountPoint, pp.path, ErrAboveConfig, pp.field)
			}
		}
	}
	if hasCap(s, "CAP_SYS_ADMIN") {
		return nil
	}
	for _, c := range created {
		if c.FSType == "proc" || c.FSType == "sysfs" {
			return fmt.Errorf("mount %s: a new %s mount from container.json: %w (it shows what linux.maskedPaths and readonlyPaths hide, and without CAP_SYS_ADMIN in process.capabilities.bounding the container could not have made it)", c.MountPoint, c.FSType, ErrAboveConfig)
		}
	}
	return nil
}

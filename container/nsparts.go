package container

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netns"

	"github.com/ctr-cr/ctr-cr/cgroup"
	"github.com/ctr-cr/ctr-cr/mounts"
	"github.com/ctr-cr/ctr-cr/nsdump"
	"github.com/ctr-cr/ctr-cr/nsdump/netdev"
)

// The parts of nsParts. A namespace part captures only a namespace of the
// container's own (ownNamespace), and not one its config joins by path (a
// pod's, a platform's): that belongs to whoever made it, and a restore
// joins it again as it is then. Their restores write only into the
// sandbox's namespaces and cgroup, which the runtime's delete of a failed
// restore discards: they have nothing to undo.

// savedNamespace reports whether the checkpoint saves the container's
// namespace of kind (nsdump.NSPath's name, specs' type): one of its own,
// not joined by path.
func (c *captureEnv) savedNamespace(kind string, specKind specs.LinuxNamespaceType) (bool, error) {
	own, err := ownNamespace(c.pid, kind)
	if err != nil {
		return false, err
	}
	return own && !joinedByPath(c.spec, specKind), nil
}

// ipcPart: SysV IPC objects and limits (nsdump.IPC).
type ipcPart struct{}

func (ipcPart) name() string        { return "ipc" }
func (ipcPart) stage() captureStage { return frozenRead }

func (ipcPart) capture(c *captureEnv) error {
	saved, err := c.savedNamespace("ipc", specs.IPCNamespace)
	if err != nil || !saved {
		return err
	}
	c.state.IPC, err = nsdump.DumpIPC(c.pid)
	return err
}

func (ipcPart) validate(st *State) error {
	if st.IPC == nil {
		return nil
	}
	return st.IPC.Validate()
}

func (ipcPart) restore(r *restoreEnv) (func() error, error) {
	if r.state.IPC == nil {
		return nil, nil
	}
	return nil, nsdump.RestoreIPC(nsdump.NSPath(r.pid, "ipc"), r.state.IPC)
}

// finish removes the segments dumped as removed once the tasks attached
// theirs again, and writes shm_rmid_forced (nsdump.FinishIPC).
func (ipcPart) finish(r *restoreEnv) error {
	if r.state.IPC == nil {
		return nil
	}
	return nsdump.FinishIPC(nsdump.NSPath(r.pid, "ipc"), r.state.IPC)
}

// utsPart: hostname and domain name (nsdump.UTS).
type utsPart struct{}

func (utsPart) name() string        { return "uts" }
func (utsPart) stage() captureStage { return frozenRead }

func (utsPart) capture(c *captureEnv) error {
	saved, err := c.savedNamespace("uts", specs.UTSNamespace)
	if err != nil || !saved {
		return err
	}
	c.state.UTS, err = nsdump.DumpUTS(c.pid)
	return err
}

func (utsPart) validate(st *State) error {
	if st.UTS == nil {
		return nil
	}
	return st.UTS.Validate()
}

func (utsPart) restore(r *restoreEnv) (func() error, error) {
	if r.state.UTS == nil {
		return nil, nil
	}
	return nil, nsdump.RestoreUTS(nsdump.NSPath(r.pid, "uts"), r.state.UTS)
}

// netPart: network links with their ifindex (veth peers on the host side
// too), addresses, routes, rules, sysctls (netdev.State). With runc's
// --empty-ns network neither captured nor restored: the platform sets the
// network namespace up.
type netPart struct{}

func (netPart) name() string        { return "net" }
func (netPart) stage() captureStage { return frozenRead }

func (netPart) capture(c *captureEnv) error {
	saved, err := c.savedNamespace("net", specs.NetworkNamespace)
	if err != nil || !saved || c.emptyNet {
		return err
	}
	ns, err := netns.GetFromPath(nsdump.NSPath(c.pid, "net"))
	if err != nil {
		return fmt.Errorf("network namespace of pid %d: %w", c.pid, err)
	}
	defer ns.Close()
	// veth peers outside the container are looked for in ctr-cr's
	// network namespace (the host's)
	c.state.Net, err = netdev.Dump(ns, nil)
	return err
}

func (netPart) validate(st *State) error {
	if st.Net == nil {
		return nil
	}
	return st.Net.Validate()
}

// restore puts the links back; a failure removes what netdev.Restore made
// (its own undo), the host side of veths included.
func (netPart) restore(r *restoreEnv) (func() error, error) {
	if r.state.Net == nil || r.emptyNet {
		return nil, nil
	}
	ns, err := netns.GetFromPath(nsdump.NSPath(r.pid, "net"))
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	outside, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer outside.Close()
	return nil, netdev.Restore(ns, r.state.Net, &netdev.RestoreOptions{Outside: outside, OutsideByHook: r.outsideByHook, CheckSysctl: netSysctlCheck(r.spec)})
}

// mountsPart: the mount tree (from the init's mountinfo) and the contents
// of each tmpfs (tmpfs-N.tar beside container.json).
type mountsPart struct{}

func (mountsPart) name() string        { return "mounts" }
func (mountsPart) stage() captureStage { return frozenWrite }

// capture saves the mount tree, with config.json's bind mounts as
// externals keyed by destination, and linux.maskedPaths as externals too
// (the runtime masks them again), and the contents of each tmpfs as
// tmpfs-N.tar in c.dir.
func (mountsPart) capture(c *captureEnv) error {
	saved, err := c.savedNamespace("mnt", specs.MountNamespace)
	if err != nil || !saved {
		return err
	}
	tree, err := mounts.ReadTree(c.pid, mounts.TreeOptions{Externals: mountExternals(c.spec)})
	if err != nil {
		return err
	}
	c.state.Mounts = tree
	for i, m := range tree.Tmpfs() {
		name := fmt.Sprintf("tmpfs-%d.tar", i)
		if err := saveTmpfs(c.pid, m.MountPoint, filepath.Join(c.dir, name)); err != nil {
			return err
		}
		if c.state.TmpfsFiles == nil {
			c.state.TmpfsFiles = map[string]string{}
		}
		c.state.TmpfsFiles[m.MountPoint] = name
	}
	return nil
}

// mountExternals lists the mount points of the config's bind mounts and
// masked paths: the runtime makes them again at restore (crun binds the
// host's /dev/null, a devtmpfs, over masked files).
func mountExternals(spec *specs.Spec) []string {
	var ext []string
	for _, m := range spec.Mounts {
		if m.Type == "bind" || hasOpt(m.Options, "bind") || hasOpt(m.Options, "rbind") {
			ext = append(ext, filepath.Clean(m.Destination))
		}
	}
	if spec.Linux != nil {
		for _, p := range spec.Linux.MaskedPaths {
			ext = append(ext, filepath.Clean(p))
		}
	}
	return ext
}

// saveTmpfs writes the contents of the tmpfs at mountPoint in pid's mount
// namespace as the new tar file path; a failure removes the file.
func saveTmpfs(pid int, mountPoint, path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = mounts.SaveTmpfs(pid, mountPoint, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("tmpfs %s: %w", mountPoint, err)
	}
	return nil
}

func (mountsPart) validate(st *State) error {
	if st.Mounts != nil {
		if err := st.Mounts.Validate(); err != nil {
			return err
		}
	}
	return validateTmpfsFiles(st.TmpfsFiles, st.Mounts)
}

// restore applies the mount tree and the tmpfs contents in the sandbox's
// mount namespace. The mounts container.json adds or changes are held to
// config.json's ceiling (precheckMounts, checkMountCeiling).
func (mountsPart) restore(r *restoreEnv) (func() error, error) {
	st := r.state
	if st.Mounts == nil {
		return nil, nil
	}
	// opened here: Apply reads them from inside the container's root
	tars := map[string]*os.File{}
	defer func() {
		for _, f := range tars {
			f.Close()
		}
	}()
	for mp, name := range st.TmpfsFiles {
		f, err := openLayer(r.img, name)
		if err != nil {
			return nil, fmt.Errorf("tmpfs %s: %w", mp, err)
		}
		tars[mp] = f
	}
	plan := mounts.Plan{Tree: st.Mounts, Tmpfs: func(m *mounts.Mount) (io.ReadCloser, error) {
		f, ok := tars[m.MountPoint]
		if !ok {
			return nil, nil
		}
		delete(tars, m.MountPoint) // Apply closes it
		return f, nil
	}}
	before, err := readMounts(r.pid)
	if err != nil {
		return nil, err
	}
	if err := precheckMounts(r.spec, st.Mounts, before); err != nil {
		return nil, err
	}
	if _, err := mounts.Apply(r.pid, plan); err != nil {
		return nil, err
	}
	after, err := readMounts(r.pid)
	if err != nil {
		return nil, err
	}
	return nil, checkMountCeiling(r.spec, before, after)
}

// cgroupPart: the cgroup's paths and settings (cgroup.Settings), read
// before the freeze, applied to the cgroup the runtime created.
type cgroupPart struct{}

func (cgroupPart) name() string        { return "cgroup" }
func (cgroupPart) stage() captureStage { return beforeFreeze }

func (cgroupPart) capture(c *captureEnv) error {
	settings, err := c.cg.ReadSettings()
	if err != nil {
		return err
	}
	c.state.Cgroup = &CgroupState{Paths: c.cg.Paths(), Settings: settings}
	return nil
}

func (cgroupPart) validate(st *State) error {
	if st.Cgroup == nil || st.Cgroup.Settings == nil {
		return nil
	}
	return st.Cgroup.Settings.Validate()
}

func (cgroupPart) restore(r *restoreEnv) (func() error, error) {
	st := r.state
	if st.Cgroup == nil || st.Cgroup.Settings == nil {
		return nil, nil
	}
	cg, err := cgroup.ForPid(r.pid)
	if err != nil {
		return nil, err
	}
	return nil, cg.Apply(st.Cgroup.Settings)
}

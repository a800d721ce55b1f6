// Package procns carries the namespaces of a dumped process tree's root
// that differ from ctr-cr's (a tree under `unshare --ipc --uts --net`): at
// dump time it saves their contents with the container layer's tools
// (nsdump: SysV IPC objects and sysctls, hostname and domainname;
// nsdump/netdev: links with their ifindex, addresses, routes, rules,
// sysctls) into the image's namespaces.json; at restore it tells the
// clone flags that create them anew, checks that the restorer runs in
// fresh ones, and fills them before the tree is restored inside.
//
// The process level differs from a container's in who makes the
// namespaces: here ctr-cr does, by running its restore in a child cloned
// with CLONE_NEW* (cmd/ctr-cr), so that every thread of the restorer, and
// every task it creates, lives in them.
package procns

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/dump"
	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/internal/threadns"
	"github.com/ctr-cr/ctr-cr/mounts"
	"github.com/ctr-cr/ctr-cr/nsdump"
	"github.com/ctr-cr/ctr-cr/nsdump/netdev"
)

// FormatVersion is the version of namespaces.json.
const FormatVersion = 1

// maxFile bounds namespaces.json: IPC contents (nsdump.MaxIPCData) in
// base64 plus the small parts.
const maxFile = nsdump.MaxIPCData/3*4 + 64<<20

// State is the contents of namespaces.json: one part per carried kind.
type State struct {
	Version int           `json:"version"`
	UTS     *nsdump.UTS   `json:"uts,omitempty"`
	IPC     *nsdump.IPC   `json:"ipc,omitempty"`
	Net     *netdev.State `json:"net,omitempty"`
	// Mounts is the mount namespace's tree as the root saw it; its root
	// mount is the restore's --root. ExtKeys names external mounts by
	// mount point (dump --ext-mount-map MOUNTPOINT:KEY; the mount point
	// itself otherwise); Tmpfs holds each tmpfs mount's contents (a tar,
	// mounts.SaveTmpfs) by mount point.
	Mounts  *mounts.Tree      `json:"mounts,omitempty"`
	ExtKeys map[string]string `json:"ext_keys,omitempty"`
	Tmpfs   map[string][]byte `json:"tmpfs,omitempty"`
	// Cgroup: the tree had a cgroup namespace of its own, every task at
	// its root; the restored one is rooted at the restorer's cgroup.
	Cgroup bool `json:"cgroup,omitempty"`
}

// cloneFlag is the CLONE_NEW* flag of each carried kind.
var cloneFlag = map[string]uintptr{
	"uts": unix.CLONE_NEWUTS,
	"ipc": unix.CLONE_NEWIPC,
	"net": unix.CLONE_NEWNET,
	// the mount namespace is made by the sandbox (sandbox.go), not by
	// the restoring child
	"mnt":    0,
	"cgroup": unix.CLONE_NEWCGROUP,
}

// Capturer saves namespaces at dump time (Capture).
type Capturer struct {
	// ExtMounts maps the mount point of a mount that comes from outside
	// (a bind of a host directory, the host's /dev) to the key a restore
	// maps back to a host path (--ext-mount-map MOUNTPOINT:KEY).
	ExtMounts map[string]string
}

// Capture saves the namespaces of kinds of the seized tree whose root is
// pid (core/dump Options.CarryNamespaces) and returns namespaces.json.
// Network devices whose peer is outside (a veth) are looked for in the
// calling thread's network namespace.
func (c *Capturer) Capture(pids []int, kinds []string) ([]byte, error) {
	st := &State{Version: FormatVersion}
	pid := pids[0]
	var err error
	for _, k := range kinds {
		switch k {
		case "uts":
			st.UTS, err = nsdump.DumpUTS(pid)
		case "ipc":
			st.IPC, err = nsdump.DumpIPC(pid)
		case "net":
			st.Net, err = dumpNet(pid)
		case "mnt":
			err = c.dumpMounts(pid, st)
		case "cgroup":
			st.Cgroup, err = true, atCgroupRoots(pids)
		default:
			err = fmt.Errorf("%s namespace: not supported", k)
		}
		if err != nil {
			return nil, err
		}
	}
	return json.Marshal(st)
}

func dumpNet(pid int) (*netdev.State, error) {
	ns, err := netns.GetFromPath(nsdump.NSPath(pid, "net"))
	if err != nil {
		return nil, fmt.Errorf("network namespace of pid %d: %w", pid, err)
	}
	defer ns.Close()
	return netdev.Dump(ns, nil)
}

// Load reads and validates the namespaces.json of the image in dir whose
// inventory is inv; nil when the image carries no namespace. Every kind the
// inventory lists must have its part, and no other part may be there.
func Load(dir string, inv *imagepb.Inventory) (*State, error) {
	if len(inv.Namespaces) == 0 {
		return nil, nil
	}
	b, err := image.ReadSide(dir, dump.NamespacesFile, inv.NamespacesSum, maxFile)
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", dump.NamespacesFile, err)
	}
	if err := st.validate(inv.Namespaces); err != nil {
		return nil, fmt.Errorf("%s: %w", dump.NamespacesFile, err)
	}
	return &st, nil
}

func (st *State) validate(kinds []string) error {
	if st.Version != FormatVersion {
		return fmt.Errorf("version %d, this ctr-cr reads %d", st.Version, FormatVersion)
	}
	seen := map[string]bool{}
	for _, k := range kinds {
		if seen[k] {
			return fmt.Errorf("%s namespace listed twice", k)
		}
		seen[k] = true
		var err error
		switch k {
		case "uts":
			err = st.UTS.Validate()
		case "ipc":
			if st.IPC == nil {
				err = errors.New("ipc: missing")
			} else {
				err = st.IPC.Validate()
			}
		case "net":
			if st.Net == nil {
				err = errors.New("net: missing")
			} else {
				err = st.Net.Validate()
			}
		case "mnt":
			err = st.validateMounts()
		case "cgroup":
			if !st.Cgroup {
				err = errors.New("cgroup: missing")
			}
		default:
			err = fmt.Errorf("%s namespace: not one ctr-cr restores", k)
		}
		if err != nil {
			return err
		}
	}
	if (st.UTS != nil && !seen["uts"]) || (st.IPC != nil && !seen["ipc"]) || (st.Net != nil && !seen["net"]) || (st.Mounts != nil && !seen["mnt"]) || (st.Cgroup && !seen["cgroup"]) {
		return errors.New("holds a namespace the inventory does not list")
	}
	return nil
}

// CloneFlags are the CLONE_NEW* flags that create the kinds.
func CloneFlags(kinds []string) (uintptr, error) {
	var f uintptr
	for _, k := range kinds {
		c, ok := cloneFlag[k]
		if !ok {
			return 0, fmt.Errorf("%s namespace: not one ctr-cr restores", k)
		}
		f |= c
	}
	return f, nil
}

// CheckFresh fails unless this process lives, for each kind but mnt (the
// tree's own: MountNS), in another namespace than the one open at left[kind]
// (the namespaces the restoring ctr-cr left): never is a tree restored into
// the namespaces it should have left.
func CheckFresh(kinds []string, left map[string]int) error {
	for _, k := range kinds {
		if k == "mnt" {
			continue
		}
		fd, ok := left[k]
		if !ok {
			return fmt.Errorf("%s namespace: the one the restorer left is not known", k)
		}
		ours, err := os.Readlink("/proc/self/ns/" + k)
		if err != nil {
			return err
		}
		theirs, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		if err != nil {
			return err
		}
		if ours == theirs {
			return fmt.Errorf("%s namespace: the restorer is still in the one it left (%s), not in a new one", k, ours)
		}
	}
	return nil
}

// Fill puts the saved contents into this process's namespaces (fresh ones,
// CheckFresh): IPC objects, hostname and domainname, network devices. The
// outside ends of veths go into the network namespace open at outsideNet.
func (st *State) Fill(outsideNet int) error {
	if st.IPC != nil {
		if err := nsdump.RestoreIPC("/proc/self/ns/ipc", st.IPC); err != nil {
			return err
		}
	}
	if st.UTS != nil {
		if err := nsdump.RestoreUTS("/proc/self/ns/uts", st.UTS); err != nil {
			return err
		}
	}
	if st.Net != nil {
		ns, err := netns.GetFromPath("/proc/self/ns/net")
		if err != nil {
			return err
		}
		defer ns.Close()
		if err := netdev.Restore(ns, st.Net, &netdev.RestoreOptions{Outside: netns.NsHandle(outsideNet)}); err != nil {
			return err
		}
	}
	return nil
}

// Finish completes Fill once the tree is restored (the IPC segments dumped
// as removed are removed now that their users are attached again).
func (st *State) Finish() error {
	if st.IPC != nil {
		return nsdump.FinishIPC("/proc/self/ns/ipc", st.IPC)
	}
	return nil
}

// Kinds lists the kinds for messages.
func Kinds(kinds []string) string {
	k := slices.Clone(kinds)
	slices.Sort(k)
	return strings.Join(k, ", ")
}

// atCgroupRoots fails unless every task of pids (in the cgroup namespace
// of pids[0]) sits at the root of that namespace in every hierarchy: the
// restored tree goes into one cgroup, the restored namespace's root.
func atCgroupRoots(pids []int) error {
	return threadns.RunInPath(nsdump.NSPath(pids[0], "cgroup"), unix.CLONE_NEWCGROUP, func() error {
		for _, pid := range pids {
			b, err := os.ReadFile(procfs.PidPath(pid, "cgroup"))
			if err != nil {
				return err
			}
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				parts := strings.SplitN(line, ":", 3)
				if len(parts) == 3 && parts[2] != "/" {
					h := parts[1]
					if h == "" {
						h = "cgroup2"
					}
					return fmt.Errorf("pid %d is in cgroup %s of %s below its cgroup namespace's root: not supported (the restored tree goes into the namespace's root)", pid, parts[2], h)
				}
			}
		}
		return nil
	})
}

// CheckVeths applies restore's --external veth[IF]:HOST[@BRIDGE] entries
// (LXC's) to the image: each must name a veth IF of the carried network
// namespace with an outside end; that end is created as HOST (LXC names
// the host side anew at each start), a port of BRIDGE, which must be the
// bridge it was a port of (the network the container was on).
func (st *State) CheckVeths(veths []string) error {
	for _, v := range veths {
		rest, ok := strings.CutPrefix(v, "veth[")
		ifname, rest, ok2 := strings.Cut(rest, "]:")
		host, bridge, _ := strings.Cut(rest, "@")
		if !ok || !ok2 || ifname == "" || host == "" || len(host) > 15 || strings.ContainsAny(host, "/ \x00") {
			return fmt.Errorf("--external %s: want veth[IF]:HOST[@BRIDGE]", v)
		}
		if st.Net == nil {
			return fmt.Errorf("--external %s: the image carries no network namespace", v)
		}
		found := false
		for _, l := range st.Net.Links {
			if l.Name != ifname || l.Peer == nil || l.Peer.Where != netdev.PeerOutside {
				continue
			}
			if bridge != "" && l.Peer.Master != bridge {
				return fmt.Errorf("--external %s: the image's %s had its outside end on bridge %q: another bridge is not supported", v, ifname, l.Peer.Master)
			}
			l.Peer.Name = host
			found = true
		}
		if !found {
			return fmt.Errorf("--external %s: the image has no veth %s with an outside end", v, ifname)
		}
	}
	return nil
}

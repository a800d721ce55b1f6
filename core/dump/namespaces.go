package dump

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// foreignKinds are the namespaces a process dump checks against ctr-cr's
// own: a task restored by `restore -D` lives in the restorer's unless the
// image carries the namespace, so a task that lived in another one would
// come back silently moved (another hostname, other SysV IPC objects, file
// paths resolved in another mount tree: the host's /etc for a container's).
// The pid namespace has its own rule (checkNamespaces); the network
// namespace too (netCarried).
var foreignKinds = []string{"mnt", "uts", "ipc", "user", "cgroup", "time"}

// NamespacesFile is the image file holding the contents of the namespaces
// the image carries (Options.CarryNamespaces).
const NamespacesFile = "namespaces.json"

// CarriedKinds are the namespaces of the tree's root that a process dump
// carries when they differ from ctr-cr's (Options.CarryNamespaces): their
// contents are saved by the caller and a restore creates them anew around
// the tree. A mount namespace is carried only with a pid namespace whose
// init is the root (the restored tree's root is then the sandbox that
// holds the new mount namespace; procns). A cgroup namespace is carried
// when every task sits at its root (the restored one is rooted where the
// restorer puts the tree: --cgroup-root). The others (user, time) are
// refused by name.
var CarriedKinds = map[string]bool{"uts": true, "ipc": true, "net": true, "mnt": true, "cgroup": true}

// checkNamespaces refuses a process dump of a tree with a process in a
// namespace other than ctr-cr's own, naming it, unless the caller carries
// those namespaces itself (Options.OwnNamespaces: a container checkpoint
// rebuilds them around the restored tree) or the namespace is one of the
// root's that the image carries (CarriedKinds, with
// Options.CarryNamespaces): then every task must share the root's. A tree
// whose root lives in a pid namespace of its own is dumped only when the
// root is that namespace's init (restored into a fresh one); a task of
// another pid namespace than the root's must be in one the root's tree
// created.
func (d *dumper) checkNamespaces() error {
	if d.opts.OwnNamespaces {
		return nil
	}
	own := map[string]string{}
	for _, k := range append(foreignKinds, "pid", "net") {
		l, err := os.Readlink("/proc/self/ns/" + k)
		if err != nil {
			continue // a kind this kernel lacks
		}
		own[k] = l
	}
	root := d.tasks[0]
	if root.pid != d.root {
		return fmt.Errorf("pid %d: the tree's root is not first", d.root)
	}
	kinds := foreignKinds
	net, err := d.netCarried(own["net"])
	if err != nil {
		return err
	}
	if net {
		kinds = append(kinds[:len(kinds):len(kinds)], "net")
	}
	var carried []string
	for _, k := range kinds {
		want, ok := own[k]
		if !ok {
			continue
		}
		l, err := os.Readlink(procfs.PidPath(root.pid, "ns/"+k))
		if err != nil {
			return fmt.Errorf("pid %d: %s namespace: %w", root.pid, k, err)
		}
		if l == want {
			if err := d.sameNamespace(k, want, "ctr-cr's"); err != nil {
				return err
			}
			continue
		}
		if !CarriedKinds[k] || d.opts.CarryNamespaces == nil {
			return fmt.Errorf("pid %d lives in another %s namespace (%s) than ctr-cr (%s): a process restore would move it into ctr-cr's; checkpoint its container with `ctr-cr checkpoint ID`, or dump and restore from inside that namespace (nsenter)", root.pid, k, l, want)
		}
		if err := d.sameNamespace(k, l, fmt.Sprintf("the root's (pid %d)", root.pid)); err != nil {
			return err
		}
		carried = append(carried, k)
	}
	l, err := os.Readlink(procfs.PidPath(root.pid, "ns/pid"))
	if err != nil {
		return fmt.Errorf("pid %d: pid namespace: %w", root.pid, err)
	}
	if l != own["pid"] && len(root.status.NSpid) > 0 && root.status.NSpid[len(root.status.NSpid)-1] != 1 {
		return fmt.Errorf("pid %d lives in another pid namespace (%s) and is not its init (pid %d there): a process restore would give it a pid of ctr-cr's namespace; checkpoint its container with `ctr-cr checkpoint ID`, or dump the namespace's init", root.pid, l, root.status.NSpid[len(root.status.NSpid)-1])
	}
	if l != own["pid"] {
		if err := d.wholePidNamespace(l); err != nil {
			return err
		}
	}
	if len(carried) == 0 {
		return nil
	}
	if slices.Contains(carried, "mnt") && l == own["pid"] {
		return fmt.Errorf("pid %d lives in another mnt namespace than ctr-cr but in ctr-cr's pid namespace: a mount namespace is carried only with the tree's own pid namespace (unshare --fork --pid --mount), whose init is the dumped root", root.pid)
	}
	pids := []int{}
	for _, t := range d.tasks {
		if !t.zombie {
			pids = append(pids, t.pid)
		}
	}
	data, err := d.opts.CarryNamespaces(pids, carried)
	if err != nil {
		// the most common such tree is a container's: name its command
		return fmt.Errorf("pid %d: namespaces %s: %w (a container's process? checkpoint the container with `ctr-cr checkpoint ID`)", root.pid, strings.Join(carried, ","), err)
	}
	d.namespaces, d.nsData = carried, data
	return nil
}

// sameNamespace refuses a task of the tree (zombies aside) whose namespace
// of kind is not want (whose is the owner of want, for the message).
func (d *dumper) sameNamespace(kind, want, whose string) error {
	for _, t := range d.tasks {
		if t.zombie {
			continue // a zombie's namespaces are gone; it only keeps its pid
		}
		l, err := os.Readlink(procfs.PidPath(t.pid, "ns/"+kind))
		if err != nil {
			return fmt.Errorf("pid %d: %s namespace: %w", t.pid, kind, err)
		}
		if l != want {
			return fmt.Errorf("pid %d lives in another %s namespace (%s) than %s (%s): a process restore gives the whole tree one namespace of each kind", t.pid, kind, l, whose, want)
		}
	}
	return nil
}

// netCarried reports whether the root's network namespace is the tree's
// own, to be carried by the image: it differs from ctr-cr's (ownNet), has
// no name (no nsfs bind mount of it in ctr-cr's mount namespace, as `ip
// netns add` makes) and no process outside the tree lives in it. A named
// or shared network namespace is the caller's to give, as it always was:
// restore runs in the namespace the tree should live in (nsenter --net).
func (d *dumper) netCarried(ownNet string) (bool, error) {
	if d.opts.CarryNamespaces == nil || ownNet == "" {
		return false, nil
	}
	l, err := os.Readlink(procfs.PidPath(d.root, "ns/net"))
	if err != nil {
		return false, fmt.Errorf("pid %d: net namespace: %w", d.root, err)
	}
	if l == ownNet {
		return false, nil
	}
	named, err := nsfsMounted(l)
	if err != nil || named {
		return false, err
	}
	inTree := map[int]bool{os.Getpid(): true}
	for _, t := range d.tasks {
		inTree[t.pid] = true
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || inTree[pid] {
			continue
		}
		if other, err := os.Readlink(procfs.PidPath(pid, "ns/net")); err == nil && other == l {
			return false, nil
		}
	}
	return true, nil
}

// nsfsMounted reports whether the namespace link (e.g. "net:[4026532]") is
// bind-mounted somewhere in ctr-cr's mount namespace.
func nsfsMounted(link string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint ... - fstype source opts
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		if fields[3] == link {
			return true, nil
		}
	}
	return false, sc.Err()
}

// wholePidNamespace refuses a tree whose root is the init of pid namespace
// ns when another process lives in that namespace outside the tree (one
// entered from outside: lxc-attach, nsenter): the restore makes a new
// namespace with the tree alone, and that process would be lost silently.
func (d *dumper) wholePidNamespace(ns string) error {
	inTree := map[int]bool{}
	for _, t := range d.tasks {
		inTree[t.pid] = true
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || inTree[pid] {
			continue
		}
		if other, err := os.Readlink(procfs.PidPath(pid, "ns/pid")); err == nil && other == ns {
			comm, _ := os.ReadFile(procfs.PidPath(pid, "comm"))
			return fmt.Errorf("pid %d (%s) lives in the tree's pid namespace (%s) but is not a descendant of its init %d (entered from outside: lxc-attach, nsenter?): the restored namespace would lose it; end it or dump without it", pid, strings.TrimSpace(string(comm)), ns, d.root)
		}
	}
	return nil
}

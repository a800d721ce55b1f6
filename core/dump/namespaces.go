package dump

import (
	"fmt"
	"os"

	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// foreignKinds are the namespaces a process dump cannot carry: a task
// restored by `restore -D` lives in the restorer's, so a task that lived in
// another one would come back silently moved (another hostname, other
// SysV IPC objects, file paths resolved in another mount tree: the host's
// /etc for a container's). The network namespace is the caller's to give
// (restore runs in the namespace the tree should live in, and sockets are
// rebuilt there); the pid namespace has its own rule (checkNamespaces).
var foreignKinds = []string{"mnt", "uts", "ipc", "user", "cgroup", "time"}

// checkNamespaces refuses a process dump of a tree with a process in a
// namespace other than ctr-cr's own, naming it, unless the caller carries
// those namespaces itself (Options.OwnNamespaces: a container checkpoint
// rebuilds them around the restored tree). A tree whose root lives in a
// pid namespace of its own is dumped only when the root is that
// namespace's init (restored into a fresh one); a task of another pid
// namespace than the root's must be in one the root's tree created.
func (d *dumper) checkNamespaces() error {
	if d.opts.OwnNamespaces {
		return nil
	}
	own := map[string]string{}
	for _, k := range append(foreignKinds, "pid") {
		l, err := os.Readlink("/proc/self/ns/" + k)
		if err != nil {
			continue // a kind this kernel lacks
		}
		own[k] = l
	}
	for _, t := range d.tasks {
		if t.zombie {
			continue // a zombie's namespaces are gone; it only keeps its pid
		}
		for _, k := range foreignKinds {
			want, ok := own[k]
			if !ok {
				continue
			}
			l, err := os.Readlink(procfs.PidPath(t.pid, "ns/"+k))
			if err != nil {
				return fmt.Errorf("pid %d: %s namespace: %w", t.pid, k, err)
			}
			if l != want {
				return fmt.Errorf("pid %d lives in another %s namespace (%s) than ctr-cr (%s): a process restore would move it into ctr-cr's; checkpoint its container with `ctr-cr checkpoint`, or dump and restore from inside that namespace (nsenter)", t.pid, k, l, want)
			}
		}
	}
	root := d.tasks[0]
	if root.pid != d.root {
		return fmt.Errorf("pid %d: the tree's root is not first", d.root)
	}
	l, err := os.Readlink(procfs.PidPath(root.pid, "ns/pid"))
	if err != nil {
		return fmt.Errorf("pid %d: pid namespace: %w", root.pid, err)
	}
	if l != own["pid"] && len(root.status.NSpid) > 0 && root.status.NSpid[len(root.status.NSpid)-1] != 1 {
		return fmt.Errorf("pid %d lives in another pid namespace (%s) and is not its init (pid %d there): a process restore would give it a pid of ctr-cr's namespace; checkpoint its container, or dump the namespace's init", root.pid, l, root.status.NSpid[len(root.status.NSpid)-1])
	}
	return nil
}

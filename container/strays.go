package container

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/ctr-cr/ctr-cr/cgroup"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// strayProcesses lists the processes of the container (in its frozen
// cgroup, or in its pid namespace when it has one of its own) that are not
// in its init's process tree: a `runc exec` session whose runtime is still
// attached has its parent outside the container, so a dump of init's tree
// would leave it out and the checkpoint would lose it silently. "pid
// (comm)" each, for the refusal.
func strayProcesses(cg *cgroup.Cgroup, initPid int) ([]string, error) {
	members, err := cg.Procs()
	if err != nil {
		return nil, err
	}
	inNS, err := pidnsMembers(initPid)
	if err != nil {
		return nil, err
	}
	members = append(members, inNS...)
	tree := map[int]bool{initPid: true}
	queue := []int{initPid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		kids, err := procfs.Children(p)
		if err != nil {
			return nil, err
		}
		for _, k := range kids {
			if !tree[k] {
				tree[k] = true
				queue = append(queue, k)
			}
		}
	}
	var strays []string
	seen := map[int]bool{}
	for _, p := range members {
		if tree[p] || seen[p] {
			continue
		}
		seen[p] = true
		comm, err := procfs.Comm(p, p)
		if err != nil {
			continue // gone meanwhile
		}
		strays = append(strays, fmt.Sprintf("%d (%s)", p, strings.TrimSpace(comm)))
	}
	return strays, nil
}

// pidnsMembers lists the processes whose pid namespace is pid's, when that
// is not ours (a container sharing the host's pid namespace has no members
// of its own to tell apart).
func pidnsMembers(pid int) ([]int, error) {
	want, err := os.Readlink(procfs.PidPath(pid, "ns/pid"))
	if err != nil {
		return nil, fmt.Errorf("pid %d: pid namespace: %w", pid, err)
	}
	if own, err := os.Readlink("/proc/self/ns/pid"); err != nil || own == want {
		return nil, err
	}
	ents, err := os.ReadDir(procfs.Mount)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns, err := os.Readlink(procfs.PidPath(p, "ns/pid")); err == nil && ns == want {
			out = append(out, p)
		}
	}
	return out, nil
}

package main

// Where a process restore puts the tree: --cgroup-root CTRLS:PATH (the
// cgroups the tree goes into; LXC passes the container's payload cgroups)
// and --restore-sibling (the restored root becomes a child of ctr-cr's
// parent, as LXC wants for the container's init).

import (
	"fmt"
	"os"
	"strings"

	"github.com/ctr-cr/ctr-cr/cgroup"
)

// cgroupRootValue is the repeatable --cgroup-root [CTRLS:]PATH option.
type cgroupRootValue struct{ roots *[]string }

func (v cgroupRootValue) String() string { return "" }

func (v cgroupRootValue) Set(s string) error {
	if s == "" {
		return fmt.Errorf("empty --cgroup-root")
	}
	*v.roots = append(*v.roots, s)
	return nil
}

// placeOptions are restore's options of this file.
func placeOptions(c *restoreConfig) []option {
	return []option{
		{names: []string{"cgroup-root"}, arg: "[CTRLS:]PATH", value: cgroupRootValue{&c.cgroupRoots},
			help: "-D DIR: restore the tree into the existing cgroup PATH of the hierarchies of CTRLS (comma-separated v1 controllers; none: every hierarchy); repeatable"},
		{names: []string{"restore-sibling"}, value: boolValue{&c.sibling},
			help: "-D DIR: the restored root becomes a child of ctr-cr's parent, not of ctr-cr (implies --detach; an image whose root is a pid namespace init in its own mount namespace)"},
	}
}

// enterCgroupRoots moves ctr-cr into the cgroups named by --cgroup-root
// entries, before anything of the tree exists: every task it creates
// starts there (and a cgroup namespace the tree gets is rooted there).
// Controllers whose hierarchy is not mounted here are skipped, as CRIU
// does.
func enterCgroupRoots(roots []string) error {
	if len(roots) == 0 {
		return nil
	}
	own, err := cgroup.ForPid(os.Getpid())
	if err != nil {
		return err
	}
	mine := own.Paths()
	p := cgroup.Paths{V1: map[string]string{}}
	for _, r := range roots {
		ctrls, path, ok := strings.Cut(r, ":")
		if !ok {
			ctrls, path = "", r
		}
		if ctrls == "" {
			for k := range mine.V1 {
				p.V1[k] = path
			}
			if mine.Unified != "" {
				p.Unified = path
			}
			continue
		}
		for _, k := range strings.Split(ctrls, ",") {
			if _, ok := mine.V1[k]; ok {
				p.V1[k] = path
			}
		}
	}
	if len(p.V1) == 0 && p.Unified == "" {
		return nil
	}
	cg, err := cgroup.Open(p)
	if err != nil {
		return fmt.Errorf("--cgroup-root: %w", err)
	}
	if err := cg.Add(os.Getpid()); err != nil {
		return fmt.Errorf("--cgroup-root: %w", err)
	}
	return nil
}

package cgroup

import (
	"fmt"
	"path/filepath"
	"strings"
)

// OpenDir opens the cgroup at an absolute directory of one mounted
// hierarchy (e.g. /sys/fs/cgroup/freezer/job or /sys/fs/cgroup/job): a v1
// directory stands for every controller of its hierarchy, a cgroup2 one for
// the unified cgroup. It serves `dump --freeze-cgroup DIR`.
func OpenDir(dir string) (*Cgroup, error) {
	dir = filepath.Clean(dir)
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("cgroup %s: not an absolute path", dir)
	}
	mounts, err := selfMounts()
	if err != nil {
		return nil, err
	}
	best := -1
	for i, m := range mounts {
		if dir != m.Point && !strings.HasPrefix(dir, m.Point+"/") {
			continue
		}
		if best < 0 || len(m.Point) > len(mounts[best].Point) {
			best = i
		}
	}
	if best < 0 {
		return nil, fmt.Errorf("cgroup %s: not inside a mounted cgroup hierarchy", dir)
	}
	m := mounts[best]
	rel := filepath.Join(m.Root, strings.TrimPrefix(dir, m.Point))
	var p Paths
	if m.V2 {
		p.Unified = rel
	} else {
		p.V1 = map[string]string{}
		for _, o := range m.Options {
			if validControllerName(o) && o != "rw" && o != "ro" && !strings.HasPrefix(o, "release_agent") && o != "noprefix" && o != "clone_children" && o != "xattr" && o != "cpuset_v2_mode" {
				p.V1[o] = rel
			}
		}
		if len(p.V1) == 0 {
			return nil, fmt.Errorf("cgroup %s: no controller in the hierarchy mounted at %s", dir, m.Point)
		}
	}
	return Open(p)
}

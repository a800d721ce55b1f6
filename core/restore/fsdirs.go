package restore

import (
	"strings"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// fsPaths returns the root and cwd to give the task: the dumped paths, or,
// for a directory that was removed, an empty one recreated in its place
// (Opener.GhostDir; removed again once the tree is restored, so the task
// sees "<path> (deleted)" as before). Both are paths as the dumper saw
// them (from its root), so the task enters its cwd before its root.
func (r *restorer) fsPaths(c *imagepb.TaskCore) (root, cwd string, err error) {
	root, cwd = c.Root, c.Cwd
	if c.RootGhost != nil {
		if root, err = r.opener.GhostDir(c.RootGhost, strings.TrimSuffix(c.Root, " (deleted)")); err != nil {
			return "", "", err
		}
	}
	if c.CwdGhost != nil {
		if cwd, err = r.opener.GhostDir(c.CwdGhost, strings.TrimSuffix(c.Cwd, " (deleted)")); err != nil {
			return "", "", err
		}
	}
	return root, cwd, nil
}

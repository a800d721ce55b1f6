package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// CrunWrapper deals with crun's refusal of a hybrid cgroup layout whose
// unified hierarchy holds controllers ("cgroups in hybrid mode not
// supported, drop all controllers from cgroupv2"; on this machine kind the
// v2 hierarchy at /sys/fs/cgroup/unified offers hugetlb). On such a host it
// puts a crun wrapper first on this process's PATH (so for the tests and
// benchmarks and the ctr-cr they run) that runs crun in a private mount
// namespace where the unified hierarchy is hidden under an empty tmpfs:
// crun then sees a plain v1 layout (the one runc uses here too). It returns
// the wrapper's directory for the caller to remove, or "" when the host
// needs none.
func CrunWrapper() (string, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &fs); err != nil || fs.Type != unix.TMPFS_MAGIC {
		return "", nil // pure v2 or no cgroups: crun takes it as it is
	}
	ctrl, err := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers")
	if err != nil || len(strings.TrimSpace(string(ctrl))) == 0 {
		return "", nil
	}
	real, err := exec.LookPath("crun")
	if err != nil {
		return "", nil // the tests report the missing crun
	}
	dir, err := os.MkdirTemp("", "ctrcr-crun-shim-")
	if err != nil {
		return "", err
	}
	q := "'" + strings.ReplaceAll(real, "'", `'\''`) + "'" // the path, quoted for sh
	// Only the commands that set cgroups up need the view (a private mount
	// namespace costs ~20 ms to make and tear down on this machine kind);
	// state, start, kill and delete work on the host's as it is.
	script := `#!/bin/sh
# crun with the cgroup2 hierarchy of this hybrid host hidden (ctr-cr tests)
for a in "$@"; do
	case "$a" in
	create|run|update|exec|ps|pause|resume)
		exec unshare -m sh -c 'mount -t tmpfs -o size=4k ctrcr-hide /sys/fs/cgroup/unified && exec "$0" "$@"' ` + q + ` "$@";;
	esac
done
exec ` + q + ` "$@"
`
	if err := os.WriteFile(filepath.Join(dir, "crun"), []byte(script), 0o755); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, os.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

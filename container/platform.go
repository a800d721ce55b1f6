package container

// What a container platform (podman with conmon, containerd's runc shim)
// needs of an OCI runtime's checkpoint and restore beyond a container
// started by hand: ctr-cr installed as `runc` (cmd/ctr-cr
// personality_runc.go) passes these.
//
// Stdio: a container without a terminal has pipes to the platform's
// monitor as its init's fds 0-2. As runc does, the checkpoint records
// what the init's fds 0-2 were (descriptors.json, runc's file and format:
// a JSON array of the three /proc/PID/fd link texts) and lets exactly
// those pipes be external; the restore's own fds 0-2, which the monitor
// set up for the new container, take their place (CRIU's inherit-fd).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/ctr-cr/ctr-cr/cgroup"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// StdioName is the image file naming the container init's fds 0-2.
const StdioName = "descriptors.json"

// PlatformCheckpoint is what a platform's checkpoint asks beyond the
// defaults.
type PlatformCheckpoint struct {
	// ExternalStdio lets the init's stdio pipes have their other end
	// outside the container (recorded in descriptors.json); any other
	// pipe to the outside is still refused.
	ExternalStdio bool
	// AcceptPaused checkpoints a paused container (containerd and CRI-O
	// pause first); its freezer is left frozen afterwards.
	AcceptPaused bool
	// EmptyNet does not save the network namespace's contents (runc's
	// --empty-ns network): the platform sets it up at restore.
	EmptyNet bool
}

// pipeLink is the /proc/PID/fd link text of a pipe.
var pipeLink = regexp.MustCompile(`^pipe:\[([0-9]+)\]$`)

// saveStdio writes descriptors.json for the init pid into dir and returns
// the inodes of the pipes among its fds 0-2.
func saveStdio(pid int, dir string) (map[uint64]bool, error) {
	desc := make([]string, 3)
	pipes := map[uint64]bool{}
	for fd := range desc {
		l, err := os.Readlink(procfs.PidPath(pid, "fd/"+strconv.Itoa(fd)))
		if err != nil {
			if os.IsNotExist(err) {
				continue // closed: recorded as ""
			}
			return nil, fmt.Errorf("stdio of pid %d: %w", pid, err)
		}
		desc[fd] = l
		if m := pipeLink.FindStringSubmatch(l); m != nil {
			ino, _ := strconv.ParseUint(m[1], 10, 64)
			pipes[ino] = true
		}
	}
	b, _ := json.Marshal(desc)
	if err := writeFile(filepath.Join(dir, StdioName), append(b, '\n')); err != nil {
		return nil, err
	}
	return pipes, nil
}

// StdioInherit reads descriptors.json of an image (if any) and returns the
// inherit map a restore with the caller's fds 0-2 as the new container's
// stdio needs: each pipe of the old stdio -> the fd number it had.
func StdioInherit(dir string) (map[string]int, error) {
	b, err := readImageFile(filepath.Join(dir, StdioName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var desc []string
	if err := json.Unmarshal(b, &desc); err != nil {
		return nil, fmt.Errorf("%s: %w", StdioName, err)
	}
	if len(desc) > 3 {
		return nil, fmt.Errorf("%s: %d entries, want at most 3", StdioName, len(desc))
	}
	m := map[string]int{}
	for fd, l := range desc {
		if pipeLink.MatchString(l) {
			if _, dup := m[l]; !dup {
				m[l] = fd
			}
		}
	}
	return m, nil
}

// leaveFreezer puts the container's freezer back as the checkpoint found
// it: thawed, or frozen again (a paused container).
func leaveFreezer(cg *cgroup.Cgroup, paused bool) {
	if !paused {
		cg.Thaw()
		return
	}
	cg.Freeze(context.Background())
}

// platformSpec rewrites, for the comparison with spec.dump only, the
// current config.json of a platform's restore where a platform rebuilding
// the spec (podman's restore of an exported checkpoint) changes nothing
// the container sees: mounts listed in another order, where no mount moves
// across one it is nested in or stacked on (the runtime then makes the
// same tree), and the propagation of a non-recursive bind spelled
// recursive or not (rprivate, private: such a bind has no submounts for
// the r to reach). Anything else is returned as it is, for CompareSpecs
// to judge.
func platformSpec(dumped, current []byte) []byte {
	var d, c map[string]any
	if json.Unmarshal(dumped, &d) != nil || json.Unmarshal(current, &c) != nil {
		return current
	}
	dm, _ := d["mounts"].([]any)
	cm, _ := c["mounts"].([]any)
	if len(dm) != len(cm) {
		return current
	}
	normalizeBindPropagation(dm)
	normalizeBindPropagation(cm)
	if order := sameMountsReordered(dm, cm); order != nil {
		re := make([]any, len(cm))
		for i, j := range order {
			re[i] = cm[j]
		}
		c["mounts"] = re
	} else {
		c["mounts"] = cm
	}
	b, err := json.Marshal(c)
	if err != nil {
		return current
	}
	return b
}

// platformSpecDumped applies normalizeBindPropagation to spec.dump too.
func platformSpecDumped(dumped []byte) []byte {
	var d map[string]any
	if json.Unmarshal(dumped, &d) != nil {
		return dumped
	}
	dm, _ := d["mounts"].([]any)
	normalizeBindPropagation(dm)
	b, err := json.Marshal(d)
	if err != nil {
		return dumped
	}
	return b
}

// normalizeBindPropagation spells the propagation of non-recursive binds
// without the r.
func normalizeBindPropagation(ms []any) {
	for _, m := range ms {
		mm, _ := m.(map[string]any)
		opts, _ := mm["options"].([]any)
		bind := false
		for _, o := range opts {
			if o == "bind" {
				bind = true
			}
			if o == "rbind" {
				bind = false
				break
			}
		}
		if !bind {
			continue
		}
		for i, o := range opts {
			switch o {
			case "rprivate", "rslave", "rshared", "runbindable":
				opts[i] = o.(string)[1:]
			}
		}
	}
}

// sameMountsReordered returns, when cm holds dm's mounts by destination in
// another order that keeps every pair of nested or stacked mounts in the
// same order, the index in cm of each of dm's mounts; nil otherwise.
func sameMountsReordered(dm, cm []any) []int {
	dest := func(m any) string {
		mm, _ := m.(map[string]any)
		s, _ := mm["destination"].(string)
		return filepath.Clean(s)
	}
	used := make([]bool, len(cm))
	order := make([]int, len(dm))
	for i, m := range dm {
		order[i] = -1
		for j := range cm {
			if !used[j] && dest(cm[j]) == dest(m) {
				used[j], order[i] = true, j
				break
			}
		}
		if order[i] < 0 {
			return nil
		}
	}
	for i := range dm {
		for k := i + 1; k < len(dm); k++ {
			a, b := dest(dm[i]), dest(dm[k])
			related := a == b || strings.HasPrefix(b, a+"/") || strings.HasPrefix(a, b+"/") || a == "/" || b == "/"
			if related && order[i] > order[k] {
				return nil
			}
		}
	}
	return order
}

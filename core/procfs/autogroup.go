package procfs

import (
	"os"
	"strconv"
	"strings"
)

// Autogroup is what /proc/PID/autogroup says of a task's scheduling
// autogroup (CONFIG_SCHED_AUTOGROUP; sched(7)).
type Autogroup struct {
	// Own is true when the task is in an autogroup of its session's own
	// ("/autogroup-N nice X"). A task whose session never called setsid
	// (init's descendants) is in the default autogroup, the root task
	// group: the file is then empty and Nice is 0, the weight that group
	// runs with.
	Own  bool
	Nice int32
}

// ReadAutogroup reads /proc/PID/autogroup; ok is false when the file does
// not exist (no autogroups in this kernel) or says something else.
func ReadAutogroup(pid int) (ag Autogroup, ok bool) {
	b, err := os.ReadFile(PidPath(pid, "autogroup"))
	if err != nil {
		return Autogroup{}, false
	}
	return ParseAutogroup(b)
}

// ParseAutogroup parses the contents of /proc/PID/autogroup: empty (the
// default autogroup) or "/autogroup-N nice X".
func ParseAutogroup(b []byte) (ag Autogroup, ok bool) {
	f := strings.Fields(string(b))
	switch {
	case len(f) == 0:
		return Autogroup{}, true
	case len(f) != 3 || !strings.HasPrefix(f[0], "/autogroup-") || f[1] != "nice":
		return Autogroup{}, false
	}
	n, err := strconv.ParseInt(f[2], 10, 32)
	if err != nil || n < -20 || n > 19 {
		return Autogroup{}, false
	}
	return Autogroup{Own: true, Nice: int32(n)}, true
}

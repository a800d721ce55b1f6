package container

import (
	"fmt"
	"path"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// rlimitNames maps the config's process.rlimits type names to resources,
// as runc and crun accept them.
var rlimitNames = map[string]int{
	"RLIMIT_CPU": unix.RLIMIT_CPU, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_DATA": unix.RLIMIT_DATA,
	"RLIMIT_STACK": unix.RLIMIT_STACK, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK,
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO,
	"RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
}

// rlimitNumbers is rlimitNames the other way round, for messages.
var rlimitNumbers = func() map[int]string {
	m := map[int]string{}
	for k, v := range rlimitNames {
		m[v] = k
	}
	return m
}()

// ownHardLimit reads ctr-cr's own hard limit of res: what a runtime that
// ctr-cr starts inherits, and so what `RUNTIME run` gives a container
// whose config does not list res. A variable so tests can fix it.
var ownHardLimit = func(res int) (uint64, error) {
	var l unix.Rlimit
	if err := unix.Prlimit(0, res, nil, &l); err != nil {
		return 0, err
	}
	return l.Max, nil
}

// hardLimits computes taskCeiling.hardLimit from the config's rlimits: a
// task without CAP_SYS_RESOURCE can lower a hard limit but never raise it,
// so the runtime's starting value is the ceiling. An unknown type in the
// config is an error, as it is for the runtimes.
func hardLimits(rl []specs.POSIXRlimit) (map[int]uint64, error) {
	out := map[int]uint64{}
	for _, res := range rlimitNames {
		v, err := ownHardLimit(res)
		if err != nil {
			return nil, fmt.Errorf("own rlimit %s: %w", rlimitNumbers[res], err)
		}
		out[res] = v
	}
	for _, l := range rl {
		res, ok := rlimitNames[l.Type]
		if !ok {
			return nil, fmt.Errorf("config.json: process.rlimits: unknown type %q", l.Type)
		}
		out[res] = l.Hard
	}
	return out, nil
}

// checkRlimits holds one process's saved hard limits to the ceiling.
func (c taskCeiling) checkRlimits(pid int, rl []*imagepb.Rlimit) error {
	if c.hardLimit == nil {
		return nil
	}
	for _, l := range rl {
		ceil, ok := c.hardLimit[int(l.Resource)]
		if !ok || l.Max <= ceil {
			continue // resources the table does not know are the engine's to refuse
		}
		name := rlimitNumbers[int(l.Resource)]
		return fmt.Errorf("pid %d: hard %s %s: %w (%s; no CAP_SYS_RESOURCE in process.capabilities.bounding, so no task can raise it; list it in process.rlimits to allow it)",
			pid, name, limitString(l.Max), ErrAboveConfig, "the runtime would start it at "+limitString(ceil))
	}
	return nil
}

func limitString(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return fmt.Sprint(v)
}

// checkStateCeiling holds the namespace and cgroup state of container.json
// to the config: nothing for namespaces the config joins by path
// (checkJoinedState), cgroup settings within linux.resources (see
// cgroup.Settings.CheckWithin). Network sysctls are held as they are
// written (netSysctlCheck).
func checkStateCeiling(s *specs.Spec, st *State) error {
	if err := checkJoinedState(s, st); err != nil {
		return err
	}
	if st.Cgroup == nil || st.Cgroup.Settings == nil || s.Linux == nil {
		return nil
	}
	if err := st.Cgroup.Settings.CheckWithin(s.Linux.Resources); err != nil {
		return fmt.Errorf("%w (%w)", err, ErrAboveConfig)
	}
	return nil
}

// checkJoinedState refuses namespace state the image holds for a kind
// the config joins by path: that namespace is someone else's (a pod's, a
// platform's), and ctr-cr writes only into namespaces the restore made.
// Checkpoints of such a container do not record it.
func checkJoinedState(s *specs.Spec, st *State) error {
	for _, k := range []struct {
		kind specs.LinuxNamespaceType
		has  bool
		what string
	}{
		{specs.UTSNamespace, st.UTS != nil, "hostname and domain name"},
		{specs.IPCNamespace, st.IPC != nil, "SysV IPC objects"},
		{specs.NetworkNamespace, st.Net != nil, "network devices"},
		{specs.MountNamespace, st.Mounts != nil, "mount tree"},
	} {
		if k.has && joinedByPath(s, k.kind) {
			return fmt.Errorf("the image holds the %s namespace's %s, but config.json joins an existing %s namespace by path: ctr-cr writes only into namespaces the restore creates", k.kind, k.what, k.kind)
		}
	}
	return nil
}

// netSysctlCheck returns the netdev.RestoreOptions.CheckSysctl of a
// restore: a container that cannot set its network sysctls itself (no
// CAP_NET_ADMIN in its bounding set, or /proc/sys/net read-only or masked
// by the config) gets back only the values `RUNTIME run` gives it: the
// fresh namespace's, or linux.sysctl's. nil when the container may set
// any of them.
func netSysctlCheck(s *specs.Spec) func(key, have, want string) error {
	if hasCap(s, "CAP_NET_ADMIN") && !pathCovered(s, "/proc/sys/net") {
		return nil
	}
	return func(key, have, want string) error {
		if s.Linux != nil {
			for k, v := range s.Linux.Sysctl {
				if strings.ReplaceAll(k, ".", "/") == "net/"+key && strings.Join(strings.Fields(v), " ") == strings.Join(strings.Fields(want), " ") {
					return nil
				}
			}
		}
		return fmt.Errorf("image value %q where a new container has %q: %w (the container has no CAP_NET_ADMIN or a read-only /proc/sys, so it cannot have set it; list it in linux.sysctl to allow it)", want, have, ErrAboveConfig)
	}
}

// pathCovered reports whether the config makes p read-only or masked
// (p or one of its parents in linux.readonlyPaths or linux.maskedPaths).
func pathCovered(s *specs.Spec, p string) bool {
	if s.Linux == nil {
		return false
	}
	for _, l := range [][]string{s.Linux.ReadonlyPaths, s.Linux.MaskedPaths} {
		for _, q := range l {
			q = path.Clean(q)
			if q == p || strings.HasPrefix(p, q+"/") {
				return true
			}
		}
	}
	return false
}

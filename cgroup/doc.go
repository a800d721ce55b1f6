// Package cgroup finds, freezes, reads, creates and configures the control
// groups of a process, for cgroup v1, hybrid and v2 (unified) hosts.
//
// A [Cgroup] is the set of directories a process belongs to: one per v1
// hierarchy (cpu, memory, freezer, name=systemd, ... found through
// /proc/PID/cgroup and the cgroup mounts of /proc/self/mountinfo, nested
// paths and co-mounted controllers such as cpu,cpuacct included) and/or one
// in the unified (v2) hierarchy. Its [Paths] (the paths inside each
// hierarchy, as /proc/PID/cgroup shows them) and its [Settings] (memory,
// cpu, pids, cpuset limits) are plain JSON-tagged structs that the container
// layer stores in its image; both have a Validate method for data read back
// from an image that may be hostile.
//
// Checkpoint:
//
//	cg, err := cgroup.ForPid(initPid)
//	...
//	if err := cg.Freeze(ctx); err != nil { ... }   // v1 freezer if present, else v2
//	defer func() { if failed { cg.Thaw() } }()     // Thaw works after any failure
//	... dump the tree ...
//	settings, err := cg.ReadSettings()
//	paths := cg.Paths()                             // store paths and settings as JSON
//	cg.Thaw()                                       // --leave-running
//	cg.Kill()                                       // otherwise (works frozen; leaves it thawed)
//
// Restore (ctr-cr building the cgroup itself, or into the cgroup runc made):
//
//	if err := paths.Validate(); err != nil { ... }
//	if err := settings.Validate(); err != nil { ... }
//	cg, err := cgroup.Create(paths)                 // or cgroup.Open(paths) / cgroup.ForPid(runcInit)
//	defer func() { if failed { cg.Remove() } }()
//	if err := cg.Apply(settings); err != nil { ... }
//	if err := cg.Add(restorerPid); err != nil { ... }
//
// The package writes cgroupfs files directly. It uses
// github.com/containerd/cgroups/v3 for parsing /proc/PID/cgroup and
// runtime-spec's LinuxResources as the OCI view of [Settings]; the library's
// cgroup1 and cgroup2 managers are not used because they cannot read limits
// back, assume every v1 hierarchy is mounted at /sys/fs/cgroup/<controller>,
// freeze without a timeout, and cannot write "max" to v2 memory files.
//
// All file operations go through the os package, which retries EINTR; the
// few raw syscalls (rmdir) go through internal/linux, which does too.
// Errors name the cgroup directory and the operation and wrap the cause
// (%w), so errors.Is works with fs.ErrNotExist, [ErrNoController],
// [ErrHasProcesses] and context.DeadlineExceeded.
package cgroup

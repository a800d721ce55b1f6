package kernel

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ABI values for the system probes.
const (
	cloneArgsSize  = 88 // CLONE_ARGS_SIZE_VER2: up to and including cgroup
	maxPidNSLevel  = 32 // MAX_PID_NS_LEVEL
	cloneDetached  = 0x00400000
	prMMMapSize    = 104 // sizeof(struct prctl_mm_map)
	archMapVdso64  = 0x2003
	prTimerIDs     = 77 // PR_TIMER_CREATE_RESTORE_IDS
	prTimerIDsGet  = 2  // PR_TIMER_CREATE_RESTORE_IDS_GET
	nsLastPidPath  = "/proc/sys/kernel/ns_last_pid"
	mapFilesSelf   = "/proc/self/map_files"
	cgroupV2Root   = "/sys/fs/cgroup/cgroup.controllers"
	cgroupV2Hybrid = "/sys/fs/cgroup/unified/cgroup.controllers"
)

// probeSystem runs the probes that need no child and no memory of their own.
func probeSystem(p *prober) {
	probeCaps(p)
	crCap := p.res[fCapCR].present
	probeClone3(p, crCap)
	probeNsLastPid(p, crCap)
	probeMMMap(p)
	probeMapFiles(p)
	probeMapVdso(p)
	probeTimerIDs(p)
	probeAnonFds(p)
	probeNamespaces(p)
	probeCgroups(p)
}

// probeClone3 calls clone3 with a size-88 clone_args whose set_tid_size
// exceeds MAX_PID_NS_LEVEL (with set_tid NULL and the clone3-invalid
// CLONE_DETACHED as a second guard): a kernel that knows set_tid rejects it
// with EINVAL while copying the arguments, before anything is created; one
// that predates set_tid fails with E2BIG (non-zero bytes past its struct), and
// one without clone3 with ENOSYS. No process is ever created. Using set_tid
// also needs crCap (CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN): without it the
// feature is reported missing even when the kernel supports it.
func probeClone3(p *prober, crCap bool) {
	var args [cloneArgsSize / 8]uint64
	args[0] = cloneDetached     // flags
	args[9] = maxPidNSLevel + 1 // set_tid_size (set_tid, args[8], is NULL)
	r, _, e := unix.Syscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&args)), cloneArgsSize, 0)
	switch {
	case e == unix.EINVAL && !crCap:
		p.set(fClone3SetTid, false, "kernel supports set_tid, but it needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN")
	case e == unix.EINVAL:
		p.set(fClone3SetTid, true, "clone_args v2 (88 bytes) understood; set_tid_size validated (EINVAL, nothing created)")
	case e == unix.E2BIG:
		p.set(fClone3SetTid, false, "clone3 predates set_tid (E2BIG on an 88-byte clone_args)")
	case e == unix.ENOSYS:
		p.set(fClone3SetTid, false, "clone3: ENOSYS (no clone3, or blocked by a seccomp policy)")
	case e != 0:
		p.set(fClone3SetTid, false, "clone3 probe: %s", errno(e))
	default:
		// Unreachable: both guards above are rejected by every kernel.
		p.set(fClone3SetTid, false, "clone3 probe unexpectedly returned %d", r)
	}
}

// probeNsLastPid opens ns_last_pid for writing and closes it unwritten. The
// kernel checks permission on write, for CAP_CHECKPOINT_RESTORE or
// CAP_SYS_ADMIN (crCap), so without crCap the feature is reported missing.
func probeNsLastPid(p *prober, crCap bool) {
	f, err := os.OpenFile(nsLastPidPath, os.O_WRONLY, 0)
	if err != nil {
		p.set(fNsLastPid, false, "open %s for writing: %s", nsLastPidPath, errno(err))
		return
	}
	f.Close()
	if !crCap {
		p.set(fNsLastPid, false, "opens for writing, but writes need CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN")
		return
	}
	p.set(fNsLastPid, true, "exists and opens for writing (not written)")
}

// probeMMMap asks PR_SET_MM_MAP_SIZE for the size of struct prctl_mm_map.
func probeMMMap(p *prober) {
	var size uint32
	// (the pointer converted in the syscall's own call expression: through
	// a Go wrapper such as unix.Prctl, a stack move could leave the kernel
	// writing into the old copy of size)
	if _, _, e := unix.Syscall6(unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP_SIZE, uintptr(unsafe.Pointer(&size)), 0, 0, 0); e != 0 {
		err := error(e)
		p.set(fMMMap, false, "prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE): %s", errno(err))
		return
	}
	if size != prMMMapSize {
		p.set(fMMMap, false, "PR_SET_MM_MAP_SIZE is %d, want %d (ABI mismatch)", size, prMMMapSize)
		return
	}
	p.set(fMMMap, true, "PR_SET_MM_MAP_SIZE = %d", size)
}

// probeCaps checks the effective capabilities the engine needs.
func probeCaps(p *prober) {
	caps, err := effectiveCaps()
	if err != nil {
		p.setAll([]string{fCapCR, fCapResource}, "read CapEff: %v", err)
		return
	}
	has := func(bit uint) bool { return caps&(1<<bit) != 0 }
	var held []string
	if has(capCheckpointRestore) {
		held = append(held, "CAP_CHECKPOINT_RESTORE")
	}
	if has(capSysAdmin) {
		held = append(held, "CAP_SYS_ADMIN")
	}
	if len(held) == 0 {
		p.set(fCapCR, false, "CapEff %#x has neither CAP_CHECKPOINT_RESTORE (40) nor CAP_SYS_ADMIN (21)", caps)
	} else {
		p.set(fCapCR, true, "effective: %s", strings.Join(held, ", "))
	}
	if has(capSysResource) {
		p.set(fCapResource, true, "CAP_SYS_RESOURCE (24) in CapEff")
	} else {
		p.set(fCapResource, false, "absent: CapEff %#x lacks bit 24", caps)
	}
}

// probeMapFiles lists /proc/self/map_files and opens one entry (both need
// CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN).
func probeMapFiles(p *prober) {
	d, err := os.Open(mapFilesSelf)
	if err != nil {
		p.set(fMapFiles, false, "open %s: %s", mapFilesSelf, errno(err))
		return
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil || len(names) == 0 {
		p.set(fMapFiles, false, "list %s: %d entries, err %v", mapFilesSelf, len(names), err)
		return
	}
	entry := mapFilesSelf + "/" + names[0]
	if _, err := os.Readlink(entry); err != nil {
		p.set(fMapFiles, false, "readlink %s: %s", entry, errno(err))
		return
	}
	fd, err := unix.Open(entry, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		p.set(fMapFiles, false, "open %s: %s", entry, errno(err))
		return
	}
	unix.Close(fd)
	p.set(fMapFiles, true, "%d entries; readlink and open work", len(names))
}

// probeMapVdso calls arch_prctl(ARCH_MAP_VDSO_64) in this process, which
// already has a vDSO: the kernel refuses a second one with EEXIST before
// mapping anything, while a kernel without the option (no
// CONFIG_CHECKPOINT_RESTORE) answers EINVAL. Without a vDSO of our own the
// call would map one, so it is then not made.
func probeMapVdso(p *prober) {
	start, ok, err := selfVdso()
	if err != nil || !ok {
		p.set(fMapVdso, false, "unknown: no [vdso] in /proc/self/maps to probe against (err %v)", err)
		return
	}
	r, _, e := unix.Syscall(unix.SYS_ARCH_PRCTL, archMapVdso64, uintptr(start), 0)
	switch {
	case e == unix.EEXIST:
		p.set(fMapVdso, true, "arch_prctl(ARCH_MAP_VDSO_64) known (EEXIST: vDSO already mapped)")
	case e != 0:
		p.set(fMapVdso, false, "arch_prctl(ARCH_MAP_VDSO_64): %s", errno(e))
	default:
		p.set(fMapVdso, false, "arch_prctl(ARCH_MAP_VDSO_64) unexpectedly returned %d", r)
	}
}

// selfVdso returns the start of this process's [vdso] mapping.
func selfVdso() (uint64, bool, error) {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, false, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasSuffix(l, "[vdso]") {
			continue
		}
		var start, end uint64
		if _, err := fmt.Sscanf(l, "%x-%x", &start, &end); err != nil {
			return 0, false, err
		}
		return start, true, nil
	}
	return 0, false, nil
}

// probeTimerIDs reads the PR_TIMER_CREATE_RESTORE_IDS mode (GET changes
// nothing).
func probeTimerIDs(p *prober) {
	v, err := unix.PrctlRetInt(prTimerIDs, prTimerIDsGet, 0, 0, 0)
	if err != nil {
		p.set(fTimerIDs, false, "prctl(PR_TIMER_CREATE_RESTORE_IDS, GET): %s", errno(err))
		return
	}
	p.set(fTimerIDs, true, "prctl(PR_TIMER_CREATE_RESTORE_IDS, GET) = %d", v)
}

// probeNamespaces checks the namespace files of this process.
func probeNamespaces(p *prober) {
	for _, ns := range []struct{ name, path string }{
		{fTimeNS, "/proc/self/ns/time"},
		{fPidNS, "/proc/self/ns/pid"},
	} {
		target, err := os.Readlink(ns.path)
		if err != nil {
			p.set(ns.name, false, "%s: %s", ns.path, errno(err))
			continue
		}
		p.set(ns.name, true, "%s -> %s", ns.path, target)
	}
}

// probeCgroups looks for a cgroup v2 hierarchy and a mounted v1 freezer.
func probeCgroups(p *prober) {
	p.set(fCgroupV2, false, "neither %s nor %s exists", cgroupV2Root, cgroupV2Hybrid)
	for _, path := range []string{cgroupV2Root, cgroupV2Hybrid} {
		if _, err := os.Stat(path); err == nil {
			p.set(fCgroupV2, true, "%s", path)
			break
		}
	}
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		p.set(fFreezerV1, false, "read /proc/self/mounts: %s", errno(err))
		return
	}
	p.set(fFreezerV1, false, "no cgroup v1 mount with the freezer controller")
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[2] != "cgroup" {
			continue
		}
		for _, o := range strings.Split(f[3], ",") {
			if o == "freezer" {
				p.set(fFreezerV1, true, "mounted at %s", f[1])
				return
			}
		}
	}
}

package hooks

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Exec is the trampoline `ctr-cr hook-exec PLAN` a Sandbox runs a hook
// through. Stage 1 runs on the host: it waits until the caller has moved
// it into the container's cgroups (EOF on fd 3), then execs nsenter into
// the container's namespaces and root, which execs stage 2 (ctr-cr's binary
// again, through its inherited fd). Stage 2 takes on the container
// process's privileges (startContainer) and execs the hook. It returns
// only on failure.
func Exec(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: ctr-cr hook-exec PLAN (run by ctr-cr itself to run an OCI hook in a container)")
	}
	var plan execPlan
	if err := json.Unmarshal([]byte(args[0]), &plan); err != nil {
		return fmt.Errorf("hook-exec: plan: %w", err)
	}
	switch plan.Stage {
	case 1:
		return execStage1(&plan)
	case 2:
		return execStage2(&plan)
	}
	return fmt.Errorf("hook-exec: stage %d", plan.Stage)
}

// nsenterPaths are where util-linux installs nsenter (the trampoline runs
// with an empty environment, so no PATH search).
var nsenterPaths = []string{"/usr/bin/nsenter", "/bin/nsenter", "/usr/sbin/nsenter"}

func execStage1(plan *execPlan) error {
	barrier := os.NewFile(3, "barrier")
	if _, err := io.Copy(io.Discard, barrier); err != nil {
		return fmt.Errorf("hook-exec: waiting for the cgroup: %w", err)
	}
	barrier.Close()
	next := *plan
	next.Stage, next.Root = 2, ""
	if plan.Drop == nil {
		next.Wd = "" // nsenter's --wd already put it there
	}
	js, err := json.Marshal(&next)
	if err != nil {
		return err
	}
	var nsenter string
	for _, p := range nsenterPaths {
		if _, err := os.Stat(p); err == nil {
			nsenter = p
			break
		}
	}
	if nsenter == "" {
		return fmt.Errorf("hook-exec: nsenter (util-linux) not found in %v", nsenterPaths)
	}
	argv := append([]string{"nsenter"}, nsenterArgs(plan, []string{"/proc/self/fd/" + strconv.Itoa(plan.ExeFd), ExecArg, string(js)})...)
	return fmt.Errorf("hook-exec: exec nsenter: %w", unix.Exec(nsenter, argv, []string{}))
}

func execStage2(plan *execPlan) error {
	if plan.Groups != nil {
		if err := setGroups(*plan.Groups); err != nil {
			return fmt.Errorf("hook-exec: %w", err)
		}
	}
	if d := plan.Drop; d != nil {
		if err := dropTo(d); err != nil {
			return fmt.Errorf("hook-exec: taking the container process's privileges: %w", err)
		}
		if plan.Wd != "" {
			// inside the container's root, as its user (runc: chdir after
			// setuid, so a cwd the user cannot enter fails the same way)
			if err := unix.Chdir(plan.Wd); err != nil {
				return fmt.Errorf("hook-exec: chdir %s: %w", plan.Wd, err)
			}
		}
		if d.NoNewPrivs {
			if err := installSeccomp(d.Seccomp); err != nil {
				return err
			}
		}
	}
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("hook-exec: close_range: %w", err)
	}
	if !strings.HasPrefix(plan.Path, "/") {
		return fmt.Errorf("hook-exec: path %q is not absolute", plan.Path)
	}
	return fmt.Errorf("hook-exec: exec %s: %w", plan.Path, unix.Exec(plan.Path, plan.Args, plan.Env))
}

// dropTo gives the calling thread (the one that execs the hook: the main
// goroutine is locked to it) the container process's privileges, in the
// order runc's init takes them on: rlimits and oom_score_adj, umask,
// no_new_privs, seccomp when it is installed with privileges (without
// no_new_privs), the bounding set, then groups, gid and uid with the
// capabilities kept across the uid change, then the capability sets.
// Credentials are changed on this thread only (raw syscalls): the other
// threads of this short-lived process go away at the exec.
func dropTo(d *drop) error {
	for _, rl := range d.Rlimits {
		res, ok := rlimitNumbers[rl.Type]
		if !ok {
			return fmt.Errorf("rlimit %s: unknown", rl.Type)
		}
		if err := unix.Prlimit(0, res, &unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}, nil); err != nil {
			return fmt.Errorf("setrlimit %s: %w", rl.Type, err)
		}
	}
	if d.OomScoreAdj != nil {
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(*d.OomScoreAdj)), 0); err != nil {
			return fmt.Errorf("oom_score_adj: %w", err)
		}
	}
	if d.UmaskSet {
		unix.Umask(int(d.Umask))
	}
	if d.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	} else if err := installSeccomp(d.Seccomp); err != nil {
		return err
	}
	last, err := capLastCap()
	if err != nil {
		return err
	}
	for c := 0; c <= last; c++ {
		if d.Bounding&(1<<c) == 0 {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
				return fmt.Errorf("bounding set: drop %d: %w", c, err)
			}
		}
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("keepcaps: %w", err)
	}
	if err := setIDs(d); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("keepcaps: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	for i := range data {
		data[i] = unix.CapUserData{
			Effective:   uint32(d.Effective >> (32 * i)),
			Permitted:   uint32(d.Permitted >> (32 * i)),
			Inheritable: uint32(d.Inheritable >> (32 * i)),
		}
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("ambient capabilities: %w", err)
	}
	for c := 0; c <= last; c++ {
		if d.Ambient&(1<<c) != 0 {
			// as runc: a capability that is not both permitted and
			// inheritable is left out of the ambient set (EPERM), not
			// an error
			if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c), 0, 0); err != nil && err != unix.EPERM {
				return fmt.Errorf("ambient capability %d: %w", c, err)
			}
		}
	}
	return nil
}

// setGroups sets this thread's supplementary groups.
func setGroups(gids []uint32) error {
	groups := make([]uint32, len(gids))
	copy(groups, gids)
	var p unsafe.Pointer
	if len(groups) > 0 {
		p = unsafe.Pointer(&groups[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(p), 0); e != 0 {
		return fmt.Errorf("setgroups %v: %w", gids, e)
	}
	return nil
}

// setIDs sets this thread's supplementary groups, gid and uid.
func setIDs(d *drop) error {
	if err := setGroups(d.Groups); err != nil {
		return err
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(d.GID), uintptr(d.GID), uintptr(d.GID)); e != 0 {
		return fmt.Errorf("setresgid %d: %w", d.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(d.UID), uintptr(d.UID), uintptr(d.UID)); e != 0 {
		return fmt.Errorf("setresuid %d: %w", d.UID, e)
	}
	return nil
}

// installSeccomp installs the filter chain on this thread, first
// installed first (the order the kernel runs them in reverse).
func installSeccomp(chain [][]byte) error {
	for i, bpf := range chain {
		if len(bpf) == 0 || len(bpf)%8 != 0 || len(bpf)/8 > 4096 {
			return fmt.Errorf("seccomp filter %d: %d bytes", i, len(bpf))
		}
		insns := make([]unix.SockFilter, len(bpf)/8)
		for j := range insns {
			b := bpf[j*8:]
			insns[j] = unix.SockFilter{Code: binary.LittleEndian.Uint16(b), Jt: b[2], Jf: b[3], K: binary.LittleEndian.Uint32(b[4:])}
		}
		prog := unix.SockFprog{Len: uint16(len(insns)), Filter: &insns[0]}
		if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog))); e != 0 {
			return fmt.Errorf("seccomp filter %d: %w", i, e)
		}
	}
	return nil
}

// capLastCap is the kernel's highest capability number.
func capLastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("cap_last_cap: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 || n > 63 {
		return 0, fmt.Errorf("cap_last_cap %q", b)
	}
	return n, nil
}

// rlimitNumbers maps OCI rlimit names to resource numbers.
var rlimitNumbers = map[string]int{
	"RLIMIT_CPU": unix.RLIMIT_CPU, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_DATA": unix.RLIMIT_DATA,
	"RLIMIT_STACK": unix.RLIMIT_STACK, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK,
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO,
	"RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
}

package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/cgroup"
	"github.com/ctr-cr/ctr-cr/internal/capnames"
)

// Sandbox is the container the createContainer and startContainer hooks
// of a restore run in, and what they may do there. runc runs those hooks
// from its init, in the container's namespaces and cgroup; ctr-cr gives
// them exactly that init's place and privileges (runc 1.1,
// libcontainer/rootfs_linux.go and standard_init_linux.go):
//
//   - createContainer runs after the rootfs mounts, before pivot_root: its
//     path resolves on the host (the init's root is still the host's), its
//     working directory is the rootfs, and it has the init's full
//     privileges (every capability, no seccomp, uid 0);
//   - startContainer runs just before the container's process is exec'd:
//     its path resolves in the container's root, from process.cwd, with
//     the process's user, groups, capabilities, no_new_privs, rlimits and
//     seccomp filter.
//
// The container's binaries are never run with more than that: a file the
// container planted at a startContainer hook's path runs as the
// container's own process would, and a createContainer hook's path is
// never looked up in the container's root.
type Sandbox struct {
	// Pid is the container's init (the runtime's, in created state).
	Pid int
	// Rootfs is the host path of the container's root filesystem.
	Rootfs string
	// Process is the bundle's process (config.json, not the privileged
	// copy the restore creates the sandbox from).
	Process *specs.Process
	// Seccomp is the filter chain runc installed in the container's
	// process (raw struct sock_filter arrays, first installed first), read
	// from the checkpoint: ctr-cr does not compile OCI seccomp profiles,
	// and the process's own chain is what runc gave it. Required when
	// config.json has linux.seccomp.
	Seccomp [][]byte
	// SpecSeccomp says config.json has linux.seccomp.
	SpecSeccomp bool
	// Exe is ctr-cr's binary, run as the trampoline into the sandbox.
	Exe string
	// Bundle is the bundle's directory; Runtime the runtime ("runc" or
	// "crun") whose way the hooks are run: crun runs createContainer from
	// the bundle directory with process.user's additional groups already
	// set, runc from the rootfs with none.
	Bundle, Runtime string
}

// execPlan is what the trampoline (ctr-cr hook-exec) does, passed as its
// one argument (JSON).
type execPlan struct {
	Stage  int      `json:"stage"`  // 1: on the host; 2: inside the namespaces
	Target int      `json:"target"` // the init whose namespaces are entered
	Root   string   `json:"root"`   // stage 1: root for nsenter ("" = the target's)
	Wd     string   `json:"wd"`     // stage 1: nsenter --wd (host path), or stage 2: chdir inside the root
	ExeFd  int      `json:"exe_fd"` // stage 1: the fd of ctr-cr's binary for stage 2
	Path   string   `json:"path"`   // the hook
	Args   []string `json:"args"`
	Env    []string `json:"env"`
	Drop   *drop    `json:"drop,omitempty"` // stage 2: the container process's privileges
	// Groups, when not nil, are set as the supplementary groups before
	// the exec (crun's createContainer); Drop sets them otherwise.
	Groups *[]uint32 `json:"groups,omitempty"`
}

// drop is a container process's identity and restrictions, applied in
// runc's order (see dropTo).
type drop struct {
	UID, GID    uint32
	Groups      []uint32
	Bounding    uint64
	Effective   uint64
	Permitted   uint64
	Inheritable uint64
	Ambient     uint64
	NoNewPrivs  bool
	Rlimits     []specs.POSIXRlimit
	OomScoreAdj *int
	Seccomp     [][]byte
	UmaskSet    bool
	Umask       uint32
}

// ExecArg is the hidden command name of the trampoline.
const ExecArg = "hook-exec"

// planFor builds the trampoline's plan for a hook of phase p.
func (sb *Sandbox) planFor(hk specs.Hook, p Phase) (*execPlan, error) {
	args := hk.Args
	if len(args) == 0 {
		args = []string{hk.Path}
	}
	env := hk.Env
	if env == nil {
		env = []string{}
	}
	plan := &execPlan{Stage: 1, Target: sb.Pid, Path: hk.Path, Args: args, Env: env}
	switch p {
	case CreateContainer:
		if !filepath.IsAbs(hk.Path) {
			return nil, fmt.Errorf("path %q: a createContainer hook's path must be absolute (it resolves on the host)", hk.Path)
		}
		plan.Root, plan.Wd = "/", sb.Rootfs
		if sb.Runtime == "crun" {
			plan.Wd = sb.Bundle
			groups := []uint32{}
			if sb.Process != nil && sb.Process.User.AdditionalGids != nil {
				groups = sb.Process.User.AdditionalGids
			}
			plan.Groups = &groups
		}
	case StartContainer:
		d, err := sb.dropFor()
		if err != nil {
			return nil, err
		}
		plan.Drop = d
		if sb.Process != nil {
			plan.Wd = sb.Process.Cwd
		}
	default:
		return nil, fmt.Errorf("phase %s does not run in the container", p)
	}
	return plan, nil
}

// dropFor turns the bundle's process into the privileges runc gives it.
func (sb *Sandbox) dropFor() (*drop, error) {
	p := sb.Process
	if p == nil {
		return nil, errors.New("config.json has no process")
	}
	d := &drop{UID: p.User.UID, GID: p.User.GID, Groups: p.User.AdditionalGids, NoNewPrivs: p.NoNewPrivileges,
		Rlimits: p.Rlimits, OomScoreAdj: p.OOMScoreAdj}
	if p.User.Umask != nil {
		d.UmaskSet, d.Umask = true, *p.User.Umask
	}
	if c := p.Capabilities; c != nil {
		var err error
		for _, set := range []struct {
			names []string
			dst   *uint64
			what  string
		}{{c.Bounding, &d.Bounding, "bounding"}, {c.Effective, &d.Effective, "effective"}, {c.Permitted, &d.Permitted, "permitted"},
			{c.Inheritable, &d.Inheritable, "inheritable"}, {c.Ambient, &d.Ambient, "ambient"}} {
			if *set.dst, err = capnames.Mask(set.names); err != nil {
				return nil, fmt.Errorf("process.capabilities.%s: %w", set.what, err)
			}
		}
	}
	if p.ApparmorProfile != "" || p.SelinuxLabel != "" {
		return nil, fmt.Errorf("process has an AppArmor profile or SELinux label: not supported for hooks run by ctr-cr")
	}
	if sb.SpecSeccomp && len(sb.Seccomp) == 0 {
		return nil, errors.New("config.json has linux.seccomp but the checkpoint has no seccomp filter for the container's process")
	}
	d.Seccomp = sb.Seccomp
	return d, nil
}

// command returns the trampoline's first stage for plan, and the barrier
// it waits on: the caller moves the process into the container's cgroups,
// then closes the barrier's write end.
func (sb *Sandbox) command(ctx context.Context, plan *execPlan) (*exec.Cmd, *os.File, error) {
	exe, err := os.Open(sb.Exe)
	if err != nil {
		return nil, nil, fmt.Errorf("ctr-cr binary: %w", err)
	}
	br, bw, err := os.Pipe()
	if err != nil {
		exe.Close()
		return nil, nil, err
	}
	plan.ExeFd = 4 // ExtraFiles: 3 the barrier, 4 the binary
	js, err := json.Marshal(plan)
	if err != nil {
		exe.Close()
		br.Close()
		bw.Close()
		return nil, nil, err
	}
	cmd := exec.CommandContext(ctx, sb.Exe, ExecArg, string(js))
	cmd.Args[0] = "ctr-cr"
	cmd.ExtraFiles = []*os.File{br, exe}
	cmd.Env = []string{}
	// its own process group: a timeout kills the hook too, whatever pid
	// namespace nsenter forked it into
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd, bw, nil
}

// runInSandbox runs one createContainer or startContainer hook.
func (sb *Sandbox) runInSandbox(cmd *exec.Cmd, barrier *os.File) error {
	if err := cmd.Start(); err != nil {
		barrier.Close()
		return err
	}
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
	cg, err := cgroup.ForPid(sb.Pid)
	if err == nil {
		err = cg.Add(cmd.Process.Pid)
	}
	if err != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		barrier.Close()
		cmd.Wait()
		return fmt.Errorf("joining the container's cgroup: %w", err)
	}
	barrier.Close() // the go-ahead
	return cmd.Wait()
}

// nsenterArgs are the first stage's nsenter arguments for plan.
func nsenterArgs(plan *execPlan, stage2 []string) []string {
	args := []string{"--all", "--target", strconv.Itoa(plan.Target)}
	if plan.Root != "" {
		args = append(args, "--root="+plan.Root)
		if plan.Wd != "" {
			args = append(args, "--wd="+plan.Wd)
		}
	}
	return append(append(args, "--"), stage2...)
}

package container

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// What a later `RUNTIME exec` reads. A restore creates the container from
// a privileged config (privbundle.go), and each runtime remembers parts
// of the config it created a container from for the processes `exec`
// starts later: runc keeps linux.seccomp (converted to libcontainer's
// form) in state.json's config and applies it to every exec'd process;
// crun keeps a copy of the whole config.json in its state directory and
// takes the exec'd process's defaults (capabilities, no_new_privs, user,
// seccomp) from it. Left as created, an exec into a restored container
// would run with every capability and no seccomp filter. execState puts
// the user's config back into those records, so that exec gives what
// `RUNTIME run` of the bundle would have given.

// userExecState rewrites doc (the runtime's parsed state file, see
// pointBundle) and the runtime's other records of the config so that they
// hold the user's process and seccomp instead of the privileged ones.
// initFilter is the restored init's oldest seccomp filter (the runtime's,
// from the same linux.seccomp), which crun keeps compiled beside the
// config.
func (r *Runtime) userExecState(id string, doc map[string]any, user *specs.Spec, initFilter []byte) error {
	switch r.Name {
	case "runc":
		cfg, ok := doc["config"].(map[string]any)
		if !ok {
			return fmt.Errorf("state.json: no config")
		}
		var seccomp any // null: as runc records a config without one
		if user.Linux != nil && user.Linux.Seccomp != nil {
			sc, err := libcontainerSeccomp(user.Linux.Seccomp)
			if err != nil {
				return fmt.Errorf("config.json: linux.seccomp: %w", err)
			}
			seccomp = sc
		}
		cfg["seccomp"] = seccomp
		cfg["no_new_privileges"] = user.Process != nil && user.Process.NoNewPrivileges
		return nil
	case "crun":
		return r.crunUserConfig(id, user, initFilter)
	}
	return nil
}

// crunUserConfig rewrites the config.json crun keeps in its state
// directory: the user's process and linux.seccomp, the rest (hooks, paths)
// as the restore's create left it. Written through a temporary file
// renamed over it, as crun writes its own.
func (r *Runtime) crunUserConfig(id string, user *specs.Spec, initFilter []byte) error {
	if err := crunSeccompFile(r.stateDir(id), user, initFilter); err != nil {
		return err
	}
	path := filepath.Join(r.stateDir(id), "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("crun state: %w", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("crun state %s: %w", path, err)
	}
	var proc, seccomp any
	if err := roundTrip(user.Process, &proc); err != nil {
		return err
	}
	if user.Linux != nil && user.Linux.Seccomp != nil {
		if err := roundTrip(user.Linux.Seccomp, &seccomp); err != nil {
			return err
		}
	}
	doc["process"] = proc
	linux, _ := doc["linux"].(map[string]any)
	if linux == nil {
		linux = map[string]any{}
		doc["linux"] = linux
	}
	if seccomp != nil {
		linux["seccomp"] = seccomp
	} else {
		delete(linux, "seccomp")
	}
	return replaceJSON(path, doc)
}

// crunSeccompFile writes seccomp.bpf, the compiled filter crun installs in
// every process `crun exec` starts, when the config has linux.seccomp:
// the filter the restored init runs, as crun compiled it for the
// container's first start (the ceiling has checked that the init has
// one). Without linux.seccomp, crun keeps none.
func crunSeccompFile(stateDir string, user *specs.Spec, initFilter []byte) error {
	path := filepath.Join(stateDir, "seccomp.bpf")
	if user.Linux == nil || user.Linux.Seccomp == nil {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("crun state: %w", err)
		}
		return nil
	}
	if len(initFilter) == 0 || len(initFilter)%8 != 0 {
		return fmt.Errorf("crun state: config.json has linux.seccomp, but the image's init has no seccomp filter to keep for crun exec")
	}
	tmp := path + ".ctr-cr-tmp"
	if err := os.WriteFile(tmp, initFilter, 0o700); err != nil {
		return fmt.Errorf("crun state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("crun state: %w", err)
	}
	return nil
}

func roundTrip(in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// replaceJSON writes doc over path through a temporary file and a rename,
// keeping path's mode.
func replaceJSON(path string, doc any) error {
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := path + ".ctr-cr-tmp"
	if err := os.WriteFile(tmp, out, fi.Mode().Perm()); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// libcontainer's seccomp encoding, as runc (1.1) writes it into state.json:
// actions and comparison operators as numbers, architectures by Go name,
// one rule per syscall name. TestRuncSeccompForm holds this to what the
// installed runc writes for the same config.
var (
	lcActions = map[specs.LinuxSeccompAction]int{
		specs.ActKill: 1, specs.ActErrno: 2, specs.ActTrap: 3, specs.ActAllow: 4, specs.ActTrace: 5,
		specs.ActLog: 6, specs.ActNotify: 7, specs.ActKillThread: 8, specs.ActKillProcess: 9,
	}
	lcOperators = map[specs.LinuxSeccompOperator]int{
		specs.OpEqualTo: 1, specs.OpNotEqual: 2, specs.OpGreaterThan: 3, specs.OpGreaterEqual: 4,
		specs.OpLessThan: 5, specs.OpLessEqual: 6, specs.OpMaskedEqual: 7,
	}
	lcArchNames = map[string]string{"x86_64": "amd64", "aarch64": "arm64"}
)

type lcSeccomp struct {
	DefaultAction   int          `json:"default_action"`
	Architectures   []string     `json:"architectures"`
	Syscalls        []*lcSyscall `json:"syscalls"`
	DefaultErrnoRet *uint        `json:"default_errno_ret,omitempty"`
	ListenerPath    string       `json:"listener_path,omitempty"`
	ListenerMeta    string       `json:"listener_metadata,omitempty"`
}

type lcSyscall struct {
	Name     string   `json:"name"`
	Action   int      `json:"action"`
	ErrnoRet *uint    `json:"errnoRet"`
	Args     []*lcArg `json:"args"`
}

type lcArg struct {
	Index    uint   `json:"index"`
	Value    uint64 `json:"value"`
	ValueTwo uint64 `json:"value_two"`
	Op       int    `json:"op"`
}

// libcontainerSeccomp converts an OCI seccomp config to runc's state.json
// form. An action, operator or architecture it does not know is an error
// (the restore is refused rather than give exec'd processes a filter
// other than runc's).
func libcontainerSeccomp(s *specs.LinuxSeccomp) (*lcSeccomp, error) {
	if len(s.Flags) > 0 {
		return nil, fmt.Errorf("flags %v: runc records none", s.Flags)
	}
	act, ok := lcActions[s.DefaultAction]
	if !ok {
		return nil, fmt.Errorf("defaultAction %q unknown", s.DefaultAction)
	}
	out := &lcSeccomp{DefaultAction: act, DefaultErrnoRet: s.DefaultErrnoRet, ListenerPath: s.ListenerPath, ListenerMeta: s.ListenerMetadata}
	for _, a := range s.Architectures {
		name, ok := strings.CutPrefix(string(a), "SCMP_ARCH_")
		if !ok {
			return nil, fmt.Errorf("architecture %q unknown", a)
		}
		name = strings.ToLower(name)
		if n, ok := lcArchNames[name]; ok {
			name = n
		}
		out.Architectures = append(out.Architectures, name)
	}
	for _, sc := range s.Syscalls {
		act, ok := lcActions[sc.Action]
		if !ok {
			return nil, fmt.Errorf("syscalls %v: action %q unknown", sc.Names, sc.Action)
		}
		args := []*lcArg{}
		for _, a := range sc.Args {
			op, ok := lcOperators[a.Op]
			if !ok {
				return nil, fmt.Errorf("syscalls %v: operator %q unknown", sc.Names, a.Op)
			}
			args = append(args, &lcArg{Index: a.Index, Value: a.Value, ValueTwo: a.ValueTwo, Op: op})
		}
		for _, n := range sc.Names {
			out.Syscalls = append(out.Syscalls, &lcSyscall{Name: n, Action: act, ErrnoRet: sc.ErrnoRet, Args: args})
		}
	}
	return out, nil
}

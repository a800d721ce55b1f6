package procns

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/nsdump"
)

// SandboxArg is argv[1] of the sandbox process (SandboxMain).
const SandboxArg = "__ctr-cr-sandbox"

// Sandbox is the process that becomes the root of a restored tree whose
// root must be a child of the restorer's parent (restore --restore-sibling,
// as LXC wants for a container's init): started with CLONE_PARENT, it is
// pid 1 of a new pid namespace, alone in a new mount namespace whose root
// mount is a bind of the restore's --root (the restorer's mounts detached),
// in the restorer's other namespaces (made and filled by it). The saved
// mounts are then recreated in it (ApplyMounts) and core/restore adopts it
// (Options.Adopt), as it adopts a container runtime's init; its pid in the
// restorer's namespace is the kernel's choice.
type Sandbox struct {
	Pid int
}

// StartSandbox starts the sandbox with root as its root and waits until it
// is there.
func StartSandbox(root string) (*Sandbox, error) {
	root, err := absDir(root)
	if err != nil {
		return nil, fmt.Errorf("--root: %w", err)
	}
	tmp, err := os.MkdirTemp("", "ctr-cr-root-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp) // mounted on in the sandbox's namespace only
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command("/proc/self/exe", SandboxArg, root, tmp)
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_PARENT}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	sb := &Sandbox{Pid: cmd.Process.Pid}
	msg, _ := io.ReadAll(io.LimitReader(r, 4096))
	if string(msg) != "K" {
		sb.Kill()
		if len(msg) == 0 {
			return nil, errors.New("sandbox: exited before it was ready")
		}
		return nil, fmt.Errorf("sandbox: %s", strings.TrimPrefix(string(msg), "E"))
	}
	for _, k := range []string{"mnt", "pid"} {
		ours, err1 := os.Readlink("/proc/self/ns/" + k)
		theirs, err2 := os.Readlink(nsdump.NSPath(sb.Pid, k))
		if err := errors.Join(err1, err2); err != nil || ours == theirs {
			sb.Kill()
			return nil, fmt.Errorf("sandbox: not in a %s namespace of its own (%v)", k, err)
		}
	}
	return sb, nil
}

// Kill ends the sandbox (a failed restore); our parent reaps it.
func (sb *Sandbox) Kill() {
	unix.Kill(sb.Pid, unix.SIGKILL)
}

// SandboxMain is the sandbox process: argv is ROOT TMP, fd 3 the pipe to
// its starter. It makes its (new) mount namespace private, binds ROOT on
// TMP, pivots into it and detaches the old root, tells its starter "K"
// (or "E" and the error) and waits to be adopted; it never returns.
func SandboxMain(argv []string) {
	st := os.NewFile(3, "sandbox pipe")
	fail := func(what string, err error) {
		fmt.Fprintf(st, "E%s: %v", what, err)
		os.Exit(1)
	}
	if len(argv) != 2 {
		fail("usage", errors.New("ROOT TMP"))
	}
	root, tmp := argv[0], argv[1]
	steps := []struct {
		what string
		fn   func() error
	}{
		{"make / private", func() error { return unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "") }},
		{"bind " + root, func() error { return unix.Mount(root, tmp, "", unix.MS_BIND, "") }},
		{"chdir", func() error { return unix.Chdir(tmp) }},
		{"pivot_root", func() error { return unix.PivotRoot(".", ".") }},
		{"detach the old root", func() error { return unix.Unmount(".", unix.MNT_DETACH) }},
		{"chdir /", func() error { return unix.Chdir("/") }},
	}
	for _, s := range steps {
		if err := s.fn(); err != nil {
			fail(s.what, err)
		}
	}
	st.WriteString("K")
	st.Close()
	for {
		unix.Pause()
	}
}

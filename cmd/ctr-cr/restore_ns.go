package main

// Process images that carry the tree's own namespaces (procns): restore
// runs in a child of ctr-cr cloned into new namespaces of those kinds,
// which fills them and restores the tree inside.

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/lifecycle"
	"github.com/ctr-cr/ctr-cr/procns"
)

// nsChildEnv marks the ctr-cr that restores inside the new namespaces:
// its value lists, as KIND=FD, fds open on the namespaces it left, so that
// it checks it is in new ones (procns.CheckFresh) and knows the outside
// network namespace (veth peers).
const nsChildEnv = "CTRCR_RESTORE_IN_NAMESPACES"

// imageNamespaces returns the kinds of namespaces the image in dir
// carries (from its inventory alone).
func imageNamespaces(dir string) ([]string, error) {
	inv, err := image.ReadInventory(dir)
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	return inv.Namespaces, nil
}

// namespacesLeft returns, in the ctr-cr that restores inside new
// namespaces, the namespaces it left by kind (nil in any other), and
// forgets the mark (the tasks it creates must not inherit it).
func namespacesLeft() (map[string]int, error) {
	v, ok := os.LookupEnv(nsChildEnv)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(nsChildEnv)
	left := map[string]int{}
	for _, kv := range strings.Split(v, ",") {
		k, f, _ := strings.Cut(kv, "=")
		fd, err := strconv.Atoi(f)
		if err != nil || fd < 3 {
			return nil, fmt.Errorf("restore: bad %s %q", nsChildEnv, v)
		}
		unix.CloseOnExec(fd)
		left[k] = fd
	}
	return left, nil
}

// needsNewNamespaces reports whether the image's kinds need ctr-cr itself
// in new namespaces (a mount namespace alone is made for the tree only).
func needsNewNamespaces(kinds []string) bool {
	f, err := procns.CloneFlags(kinds)
	return err != nil || f != 0
}

// execInNewNamespaces moves this thread into new namespaces of kinds and
// execs this same restore command line there: ctr-cr keeps its pid (it
// stays the parent of the restored tree, as without namespaces), its fds
// (terminal, --inherit-fd) and its caller, and the new image runs wholly
// in the new namespaces. It returns only on failure.
func execInNewNamespaces(kinds []string) error {
	flags, err := procns.CloneFlags(kinds)
	if err != nil {
		return err
	}
	var marks []string
	for _, k := range kinds {
		if k == "mnt" {
			continue
		}
		// no O_CLOEXEC: the exec'd ctr-cr gets it
		fd, err := unix.Open("/proc/thread-self/ns/"+k, unix.O_RDONLY, 0)
		if err != nil {
			return fmt.Errorf("restore: %s namespace: %w", k, err)
		}
		marks = append(marks, fmt.Sprintf("%s=%d", k, fd))
	}
	// the main goroutine is locked to this thread (main.go): the
	// namespaces are this thread's, and exec makes them the process's
	if err := unix.Unshare(int(flags)); err != nil {
		return fmt.Errorf("restore: creating the image's %s namespaces: %w", procns.Kinds(kinds), err)
	}
	env := append(os.Environ(), nsChildEnv+"="+strings.Join(marks, ","))
	err = unix.Exec("/proc/self/exe", os.Args, env)
	return fmt.Errorf("restore: exec in the new namespaces: %w", err)
}

// loadNamespaces, in the child, checks that it runs in new namespaces of
// the image's kinds and reads their saved contents, which the restore puts
// in (nsNotify) after it has locked the network again.
func loadNamespaces(dir string, kinds []string, left map[string]int, veths []string) (*procns.State, error) {
	if err := procns.CheckFresh(kinds, left); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	inv, err := image.ReadInventory(dir)
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	st, err := procns.Load(dir, inv)
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	if err := st.CheckVeths(veths); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	return st, nil
}

// nsNotify is the lifecycle of a restore into the namespaces ctr-cr made
// (restore -D DIR of an image that carries them): the saved contents go
// in before the tree is restored, once the dump's network lock is taken
// again in the new network namespace (restore.Options.Relock), and are
// finished once the tree runs.
type nsNotify struct {
	lifecycle.Base
	st         *procns.State
	outsideNet int // the network namespace ctr-cr came from (veths' peers)
}

func (n *nsNotify) BeforeTasksRun(int) error {
	if err := n.st.Fill(n.outsideNet); err != nil {
		return fmt.Errorf("restore: namespaces: %w", err)
	}
	return nil
}

func (n *nsNotify) AfterRestore(int) error { return n.st.Finish() }

// checkRootOption: --root (for -D DIR) gives the root of the mount
// namespace an image carries, and is needed for it; an image without one
// refuses it (never silently ignored).
func checkRootOption(c *restoreConfig, kinds []string) error {
	mnt := slices.Contains(kinds, "mnt")
	switch {
	case mnt && c.rtRoot == "":
		return usageErrorf(restoreSynopsis, "the image carries the tree's mount namespace: --root DIR (the root of the restored mount namespace) is required")
	case !mnt && c.rtRoot != "":
		return usageErrorf(restoreSynopsis, "--root: the image carries no mount namespace; for a container: ctr-cr restore --root DIR ... BUNDLE")
	case !mnt && len(c.extMounts) > 0:
		return usageErrorf(restoreSynopsis, "--ext-mount-map/--external mnt[]: the image carries no mount namespace")
	}
	return nil
}

func init() {
	// The sandbox of a restore --restore-sibling (procns.Sandbox) runs
	// this same binary; it never returns.
	if len(os.Args) > 1 && os.Args[1] == procns.SandboxArg {
		procns.SandboxMain(os.Args[2:])
	}
}

// startSandbox starts the sibling sandbox rooted at root and recreates the
// saved mounts in it (restore --restore-sibling).
func startSandbox(st *procns.State, root string, ext map[string]string) (*procns.Sandbox, error) {
	sb, err := procns.StartSandbox(root)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := st.ApplyMounts(sb.Pid, ext); err != nil {
		sb.Kill()
		return nil, fmt.Errorf("restore: mounts: %w", err)
	}
	return sb, nil
}

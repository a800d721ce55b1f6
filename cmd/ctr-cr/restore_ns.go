package main

// Process images that carry the tree's own namespaces (procns): restore
// runs in a child of ctr-cr cloned into new namespaces of those kinds,
// which fills them and restores the tree inside.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"syscall"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/restore"
	"github.com/ctr-cr/ctr-cr/procns"
)

// nsChildEnv marks the child that restores inside the new namespaces; it
// checks that they are new (procns.CheckFresh), so the mark cannot make a
// tree land in the caller's namespaces.
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

// inNamespacesChild reports whether this ctr-cr is the child that
// restores inside new namespaces, and forgets the mark (the tasks it
// creates must not inherit it).
func inNamespacesChild() bool {
	v := os.Getenv(nsChildEnv)
	os.Unsetenv(nsChildEnv)
	return v == "1"
}

// restoreInNewNamespaces runs this same restore command line in a child
// cloned with new namespaces of kinds, passing the terminal and the
// --inherit-fd fds at their numbers, and returns its exit status.
// Termination signals are passed on to it (it passes them on to the
// restored tree when it stays its parent).
func restoreInNewNamespaces(kinds []string, inherit map[string]int) (int, error) {
	flags, err := procns.CloneFlags(kinds)
	if err != nil {
		return 1, err
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), nsChildEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	maxFd := 2
	for _, fd := range inherit {
		maxFd = max(maxFd, fd)
	}
	if maxFd > 2 {
		cmd.ExtraFiles = make([]*os.File, maxFd-2)
		for _, fd := range inherit {
			if fd > 2 {
				cmd.ExtraFiles[fd-3] = os.NewFile(uintptr(fd), fmt.Sprintf("fd %d", fd))
			}
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 1, fmt.Errorf("restore: creating the image's %s namespaces: %w", procns.Kinds(kinds), err)
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// fillNamespaces, in the child, checks that it runs in new namespaces of
// the image's kinds and puts their saved contents in; the returned State
// is finished (Finish) once the tree is restored.
func fillNamespaces(dir string, kinds []string) (*procns.State, error) {
	if err := procns.CheckFresh(kinds); err != nil {
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
	if inv.NetLock != "" && slices.Contains(kinds, "net") {
		// the dump's lock went with the old namespace: lock the
		// connections again in the new one before its links come up
		if err := restore.Relock(dir, os.Getpid()); err != nil {
			return nil, fmt.Errorf("restore: network lock: %w", err)
		}
	}
	if err := st.Fill(); err != nil {
		return nil, fmt.Errorf("restore: namespaces: %w", err)
	}
	return st, nil
}

package main

import (
	"reflect"
	"testing"
)

// TestCriuArgs: LXC 5.0.2's dump and restore command lines (as recorded in
// issue 14) become ctr-cr's: CRIU's tuning options dropped, the console
// (--external tty[...]) a shell job, unknown --external entries of a dump
// (LXC's stale buffer) dropped, mounts kept.
func TestCriuArgs(t *testing.T) {
	dump := []string{"--tcp-established", "--file-locks", "--link-remap", "--manage-cgroups=full", "--ext-mount-map", "auto",
		"--enable-external-sharing", "--enable-external-masters", "--enable-fs", "hugetlbfs", "--enable-fs", "tracefs",
		"-D", "/d", "-o", "/d/dump.log", "--cgroup-root", "name=systemd:/lxc.payload.c1", "--cgroup-root", "pids:/lxc.payload.c1", "-v4",
		"--ext-mount-map", "/lib:lib", "-t", "42", "--skip-in-flight", "--freeze-cgroup", "/sys/fs/cgroup/freezer//lxc.payload.c1",
		"--ext-mount-map", "/dev/console:console", "--external", "tty[8800:1a]", "--force-irmap", "--external", "garbage\x01"}
	want := []string{"--tcp-established", "--file-locks", "--link-remap", "--ext-mount-map", "auto",
		"-D", "/d", "-o", "/d/dump.log", "-v4",
		"--ext-mount-map", "/lib:lib", "-t", "42", "--skip-in-flight", "--freeze-cgroup", "/sys/fs/cgroup/freezer//lxc.payload.c1",
		"--ext-mount-map", "/dev/console:console", "--shell-job"}
	if got := criuArgs("dump", dump); !reflect.DeepEqual(got, want) {
		t.Errorf("dump:\n got %q\nwant %q", got, want)
	}
	restore := []string{"--tcp-established", "--manage-cgroups=full", "-D", "/d", "-o", "/d/restore.log", "--cgroup-root", "pids:/p",
		"--root", "/r", "--restore-detached", "--restore-sibling", "--inherit-fd", "fd[3]:tty[8800:1a]",
		"--ext-mount-map", "console:/dev/pts/4", "--external", "console:/dev/pts/4", "--lsm-profile", "x", "--external", "veth[eth0]:v1@br0"}
	want = []string{"--tcp-established", "-D", "/d", "-o", "/d/restore.log", "--cgroup-root", "pids:/p",
		"--root", "/r", "--restore-detached", "--restore-sibling", "--inherit-fd", "fd[3]:tty[8800:1a]",
		"--ext-mount-map", "console:/dev/pts/4", "--external", "veth[eth0]:v1@br0"}
	if got := criuArgs("restore", restore); !reflect.DeepEqual(got, want) {
		t.Errorf("restore:\n got %q\nwant %q", got, want)
	}
}

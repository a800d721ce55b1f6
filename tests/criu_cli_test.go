package tests

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCR_CRIUCommandLine: a script written for CRIU runs unchanged. A case
// is dumped and restored twice with CRIU's spellings (-o/-v4 log files,
// --shell-job/-j, --tcp-established, --file-locks, --link-remap,
// --ext-unix-sk, --network-lock nftables, --manage-cgroups=ignore and
// LXC's --skip-in-flight on dump; --restore-detached, --pidfile,
// --tcp-established, --skip-in-flight ... on restore); the log files and
// the relative pid file land in the image directory as CRIU's do, and the
// case continues. Before that, an option asking for what ctr-cr does not
// do (--network-lock iptables) is refused with exit 2 and an "Error" line
// naming it, and the target runs on untouched.
func TestCR_CRIUCommandLine(t *testing.T) {
	r := startCase(t, Case{Name: "CRIUCommandLine", Src: "a_sleep_read.c"})
	if noCR {
		t.Skip("CTRCR_NOCR=1: needs ctr-cr")
	}
	pid := strconv.Itoa(r.Pid)

	_, stderr, err := ctrcr(t, "dump", "-t", pid, "-D", filepath.Join(r.imgBase, "refused"), "--network-lock", "iptables")
	requireExitCode(t, err, stderr, 2)
	if !strings.HasPrefix(stderr, "Error (ctr-cr dump): --network-lock iptables: not supported") {
		t.Errorf("--network-lock iptables: stderr does not start with the Error line naming it:\n%s", stderr)
	}
	requireRunningUntraced(t, r.Pid)

	for i := 0; i < defaultCycles; i++ {
		tids, err := listTids(r.Pid)
		if err != nil {
			r.fatalf("", "cycle %d: before dump: %v", i, err)
		}
		img := filepath.Join(r.imgBase, "img"+strconv.Itoa(i))
		if err := os.MkdirAll(img, 0o755); err != nil {
			t.Fatal(err)
		}
		desc := descendants(r.Pid)
		_, stderr, err := ctrcr(t, "dump", "-t", pid, "-D", img, "-o", "dump.log", "-v4", "-j",
			"--tcp-established", "--file-locks", "--link-remap", "--ext-unix-sk",
			"--network-lock", "nftables", "--manage-cgroups=ignore", "--skip-in-flight")
		if err != nil {
			r.fatalf(stderr, "cycle %d: dump: %v", i, err)
		}
		if err := waitGone(r.Pid, goneTimeout); err != nil {
			r.fatalf(stderr, "cycle %d: after dump: %v", i, err)
		}
		if err := reapTree(desc, goneTimeout); err != nil {
			r.fatalf(stderr, "cycle %d: after dump: %v", i, err)
		}
		requireLogSays(t, filepath.Join(img, "dump.log"), "Dumping finished successfully", "stats: {")

		_, stderr, err = ctrcr(t, "restore", "-D", img, "--restore-detached", "--pidfile", "restore.pid",
			"-o", "restore.log", "-v4", "--tcp-established", "--ext-unix-sk", "--file-locks", "--manage-cgroups=ignore", "--skip-in-flight")
		if err != nil {
			r.fatalf(stderr, "cycle %d: restore: %v", i, err)
		}
		if err := waitBack(r.Pid, tids, backTimeout, nil); err != nil {
			r.fatalf(stderr, "cycle %d: after restore: %v", i, err)
		}
		requireLogSays(t, filepath.Join(img, "restore.log"), "Restore finished successfully")
		if b, err := os.ReadFile(filepath.Join(img, "restore.pid")); err != nil || strings.TrimSpace(string(b)) != pid {
			t.Errorf("cycle %d: --pidfile restore.pid in the image dir holds %q (%v), want %s", i, b, err, pid)
		}
	}

	// restored with --restore-detached: the case is our child (subreaper)
	r.requestGo()
	status, err := waitChild(r.Pid, goTimeout)
	if err != nil {
		r.fatalf("", "after go: %v", err)
	}
	r.reaped = true
	if !status.Exited() || status.ExitStatus() != 0 {
		r.fatalf("", "case ended with %s", describeStatus(status))
	}
	r.requirePass("")
}

// requireLogSays requires the log file at path to hold every one of wants.
func requireLogSays(t *testing.T, path string, wants ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("log file: %v", err)
	}
	for _, w := range wants {
		if !strings.Contains(string(b), w) {
			t.Errorf("%s does not say %q:\n%s", path, w, b)
		}
	}
}

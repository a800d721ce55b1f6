package bundletests

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// asRunc runs ctr-cr under the basename runc (a symlink, as installed for
// a container platform) with runc's command line.
func asRunc(t *testing.T, args ...string) (string, error) {
	t.Helper()
	link := filepath.Join(t.TempDir(), "runc")
	if err := os.Symlink(testutil.BuildCtrCr(t), link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link, args...)
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	cmd.Stdin = null
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("runc (ctr-cr) %s: %v (%.2fs)", strings.Join(args, " "), err, time.Since(start).Seconds())
	return string(out), err
}

func (b *bundle) status() string {
	st, err := b.state()
	if err != nil {
		return "gone"
	}
	s, _ := st["status"].(string)
	return s
}

// A paused container (as containerd and CRI-O pause before a checkpoint)
// is checkpointed by ctr-cr as runc: with --leave-running it stays paused
// (nothing runs in it until resumed); without, it is gone and restores
// from the image with runc's restore command line, counting on, with the
// pid file written; stats-dump and dump.log land in the work path.
func TestCheckpoint_RuncPaused(t *testing.T) {
	b := newBundle(t, "runc", counterScript)
	b.start()
	b.waitCount(3)
	for cycle := 1; cycle <= 2; cycle++ {
		if out, err := b.rt("pause", b.id); err != nil {
			t.Fatalf("runc pause: %v %s", err, out)
		}
		at := b.count()
		img, work := filepath.Join(b.dir, "img"), filepath.Join(b.dir, "work")
		os.RemoveAll(img)
		if out, err := asRunc(t, "checkpoint", "--image-path", img, "--work-path", work, "--leave-running", b.id); err != nil {
			t.Fatalf("cycle %d: checkpoint --leave-running of a paused container: %v\n%s", cycle, err, out)
		}
		if s := b.status(); s != "paused" {
			t.Fatalf("cycle %d: after checkpoint --leave-running the container is %q, want paused", cycle, s)
		}
		time.Sleep(300 * time.Millisecond)
		if c := b.count(); c != at {
			t.Fatalf("cycle %d: the paused container counted on (%d -> %d)", cycle, at, c)
		}
		for _, f := range []string{"stats-dump", "dump.log"} {
			if _, err := os.Stat(filepath.Join(work, f)); err != nil {
				t.Errorf("work path: %v", err)
			}
		}
		os.RemoveAll(img)
		if out, err := asRunc(t, "checkpoint", "--image-path", img, "--work-path", work, b.id); err != nil {
			t.Fatalf("cycle %d: checkpoint of a paused container: %v\n%s", cycle, err, out)
		}
		if s := b.status(); s != "gone" {
			t.Fatalf("cycle %d: after the checkpoint the container is %q", cycle, s)
		}
		pidFile := filepath.Join(b.dir, "pid")
		if out, err := asRunc(t, "restore", "--image-path", img, "--work-path", work, "--detach", "--pid-file", pidFile,
			"-no-subreaper", "--bundle", b.dir, b.id); err != nil {
			t.Fatalf("cycle %d: restore: %v\n%s", cycle, err, out)
		}
		st, err := b.state()
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := st["pid"].(float64)
		data, _ := os.ReadFile(pidFile)
		if n, _ := strconv.Atoi(string(data)); n != int(pid) || n == 0 {
			t.Errorf("pid file %q, runc state pid %v", data, pid)
		}
		if c := b.waitCount(at); c > at+50 {
			t.Errorf("cycle %d: counter at %d after the restore, checkpointed at %d", cycle, c, at)
		}
	}
}

// A pipe to the outside that is not the init's stdio (one the platform
// would not hand back) is refused at checkpoint, naming it; the container
// runs on, or, paused, stays paused.
func TestCheckpoint_RuncExternalPipe(t *testing.T) {
	b := newBundle(t, "runc", counterScript)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command("runc", "run", "-d", "--preserve-fds", "1", "--bundle", b.dir, b.id)
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Run(); err != nil {
		t.Fatalf("runc run -d --preserve-fds 1: %v", err)
	}
	w.Close()
	t.Cleanup(func() { b.rt("delete", "--force", b.id) })
	b.waitCount(3)
	out, err := asRunc(t, "checkpoint", "--image-path", filepath.Join(b.dir, "img"), b.id)
	if err == nil || !strings.Contains(out, "pipe with an end held outside the dump") || !strings.Contains(out, "fd 3") {
		t.Fatalf("checkpoint with a pipe to the outside on fd 3: %v\n%s", err, out)
	}
	if s := b.status(); s != "running" {
		t.Fatalf("after the refused checkpoint the container is %q", s)
	}
	b.waitCount(b.count() + 3)
	// paused (as containerd pauses first): refused the same, and still
	// paused after, nothing having run
	if out, err := b.rt("pause", b.id); err != nil {
		t.Fatalf("runc pause: %v %s", err, out)
	}
	at := b.count()
	if out, err := asRunc(t, "checkpoint", "--image-path", filepath.Join(b.dir, "img"), b.id); err == nil || !strings.Contains(out, "pipe with an end held outside the dump") {
		t.Fatalf("checkpoint of the paused container: %v\n%s", err, out)
	}
	if s := b.status(); s != "paused" {
		t.Fatalf("after the refused checkpoint the paused container is %q", s)
	}
	time.Sleep(300 * time.Millisecond)
	if c := b.count(); c != at {
		t.Fatalf("the paused container ran during or after the refused checkpoint (%d -> %d)", at, c)
	}
	if out, err := b.rt("resume", b.id); err != nil {
		t.Fatalf("runc resume: %v %s", err, out)
	}
	b.waitCount(at + 3)
}

// Without --detach, runc's restore stays in the foreground as the
// container's subreaper and exits with its init's status.
func TestRestore_RuncForeground(t *testing.T) {
	b := newBundle(t, "runc", `i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done; exit 7`)
	b.start()
	b.waitCount(5)
	img := filepath.Join(b.dir, "img")
	if out, err := asRunc(t, "checkpoint", "--image-path", img, b.id); err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}
	at := b.count()
	// the work path is the image path by default: the log and the stats
	// are in the image directory that replaced the one there before
	for _, f := range []string{"dump.log", "stats-dump", "inventory.img"} {
		if _, err := os.Stat(filepath.Join(img, f)); err != nil {
			t.Errorf("image directory: %v", err)
		}
	}
	out, err := asRunc(t, "restore", "--image-path", img, "--bundle", b.dir, b.id)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("foreground restore: %v (want exit status 7)\n%s", err, out)
	}
	if c := b.count(); c != 40 || at >= 40 {
		t.Errorf("the restored container ended at %d (checkpointed at %d), want 40", c, at)
	}
}

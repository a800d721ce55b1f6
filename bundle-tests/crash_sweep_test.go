package bundletests

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestCrash_ContainerSweep: ctr-cr killed (CTRCR_FAULT=point:N) at every
// named point of a container checkpoint in turn, then at every named
// point of a container restore, each followed by `ctr-cr cleanup`. After
// each crash: config.json is byte-identical; no container is left
// "created" or paused; the container either runs on, counting, with the
// previous image byte-identical or replaced by a complete one, or it is
// gone and the image restores it; a restore's image is never touched.
// With CTRCR_CRASH_STRIDE set (make stress) both runtimes, else runc.
func TestCrash_ContainerSweep(t *testing.T) {
	rts := []string{"runc"}
	if os.Getenv("CTRCR_CRASH_STRIDE") != "" {
		rts = runtimes
	}
	for _, rt := range rts {
		t.Run(rt, func(t *testing.T) { testCrashContainerSweep(t, rt) })
	}
}

func testCrashContainerSweep(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	b.usePrivateTmp() // the counter lives in the image, not the rootfs
	b.start()
	b.waitCount(1)
	bin := testutil.BuildCtrCr(t)
	config := hashFile(t, filepath.Join(b.dir, "config.json"))
	img := filepath.Join(b.dir, "checkpoint")
	if out, err := ctrcr(t, "checkpoint", "--leave-running", b.id); err != nil {
		t.Fatalf("first checkpoint: %v\n%s", err, out)
	}
	// crashAt runs ctr-cr args with the N-th named point fatal; it reports
	// whether ctr-cr was killed there (else it must have succeeded).
	crashAt := func(n int, args ...string) (killed bool, where string) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), fmt.Sprintf("CTRCR_FAULT=point:%d", n))
		out, err := cmd.CombinedOutput()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			_, where, _ = strings.Cut(string(out), "fault: killed at point ")
			if out, err := exec.Command(bin, "cleanup").CombinedOutput(); err != nil {
				t.Fatalf("cleanup after a crash at %s: %v\n%s", where, err, out)
			}
			return true, strings.TrimSpace(where)
		}
		if err != nil {
			t.Fatalf("%s with point %d fatal: %v\n%s", strings.Join(args, " "), n, err, out)
		}
		return false, ""
	}
	check := func(phase, where string) {
		t.Helper()
		if h := hashFile(t, filepath.Join(b.dir, "config.json")); h != config {
			t.Fatalf("%s, crash at %s: config.json changed", phase, where)
		}
		if s := staged(img); len(s) != 0 {
			t.Fatalf("%s, crash at %s: left beside the image: %v", phase, where, s)
		}
	}
	// checkpoints: a crash leaves the container running (a previous image
	// as it was, or a complete new one) or killed with a complete image
	points := 0
	for n := 1; ; n++ {
		before := hashDir(t, img)
		killed, where := crashAt(n, "checkpoint", b.id)
		if !killed {
			points = n - 1
			break
		}
		check("checkpoint", where)
		st, err := b.state()
		status, _ := st["status"].(string)
		t.Logf("checkpoint killed at %s: container %q", where, status)
		switch {
		case err == nil && status == "running":
			b.waitCount(b.count())
			if after := hashDir(t, img); after != before && !complete(img) {
				t.Fatalf("checkpoint, crash at %s: the previous image changed and the new one is not complete", where)
			}
		case err == nil:
			t.Fatalf("checkpoint, crash at %s: container %s is %q after cleanup", where, b.id, status)
		default:
			// gone: killed only after a complete image
			if !complete(img) {
				t.Fatalf("checkpoint, crash at %s: the container is gone and the image is not complete", where)
			}
			b.restore(n)
			b.waitCount(b.count())
		}
	}
	t.Logf("%s checkpoint: %d named points swept", rt, points)
	if points < 5 {
		t.Fatalf("only %d named points in a checkpoint: the sweep sweeps nothing", points)
	}
	// the last checkpoint succeeded and killed the container: restores
	imgHash := hashDir(t, img)
	points = 0
	for n := 1; ; n++ {
		killed, where := crashAt(n, "restore", "-d", b.dir)
		if h := hashDir(t, img); h != imgHash {
			t.Fatalf("restore, crash at %s: the image changed", where)
		}
		if !killed {
			points = n - 1
			break
		}
		check("restore", where)
		st, err := b.state()
		status, _ := st["status"].(string)
		t.Logf("restore killed at %s: container %q", where, status)
		switch {
		case err != nil:
			// nothing left: the next round restores from the same image
		case status == "running":
			// the crash came after the start: a checkpoint makes the image
			// to go on with
			b.waitCount(b.count())
			if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
				t.Fatalf("checkpoint after a restore killed at %s: %v\n%s", where, err, out)
			}
			imgHash = hashDir(t, img)
		default:
			t.Fatalf("restore, crash at %s: container %s is %q after cleanup", where, b.id, status)
		}
	}
	t.Logf("%s restore: %d named points swept", rt, points)
	if points < 2 {
		t.Fatalf("only %d named points in a restore", points)
	}
	b.waitStatus("running")
	b.waitCount(b.count())
}

// complete reports whether the image directory holds a finished image.
func complete(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "inventory.img"))
	return err == nil
}

// hashFile is the SHA-256 of a file, in hex.
func hashFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// hashDir hashes the names and contents of the files of dir ("" when it
// does not exist).
func hashDir(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		b, _ := os.ReadFile(filepath.Join(dir, n))
		fmt.Fprintf(h, "%s %d\n", n, len(b))
		h.Write(b)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

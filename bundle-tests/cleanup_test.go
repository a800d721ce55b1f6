package bundletests

// What a ctr-cr killed during a container checkpoint or restore leaves,
// and how `ctr-cr cleanup` (or the next ctr-cr run) undoes it
// (internal/oprec, docs/crash.md); one checkpoint or restore of a
// container, or of an image directory, at a time.

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// crashAt runs ctr-cr args with CTRCR_FAULT=point and requires that it
// died there by SIGKILL.
func crashAt(t *testing.T, point string, args ...string) {
	t.Helper()
	testutil.CtrCrKilledAt(t, 0, point, args...)
}

// dirSums maps each file of dir to its SHA-256.
func dirSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		m[e.Name()] = hex.EncodeToString(s[:])
	}
	return m
}

// sameSums reports the first difference between two dirSums, or "".
func sameSums(a, b map[string]string) string {
	for n, s := range a {
		if b[n] != s {
			return n
		}
	}
	for n := range b {
		if _, ok := a[n]; !ok {
			return n
		}
	}
	return ""
}

// staged lists what a checkpoint left beside the image directory dir.
func staged(dir string) []string {
	m, _ := filepath.Glob(dir + ".tmp-*")
	return m
}

// waitStatus waits until the runtime reports the container in status want.
func (b *bundle) waitStatus(want string) {
	b.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := b.state()
		if err == nil && st["status"] == want {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("container %s: status %v (%v), want %s", b.id, st["status"], err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCrash_CheckpointFrozen: ctr-cr killed while the container's cgroup
// is frozen and its tmpfs tar written: the container is left paused with
// the unfinished image beside the previous one. `ctr-cr cleanup` thaws it
// (running, counting again) and removes the unfinished image; the
// previous image is byte-identical. After a second such crash, the next
// ctr-cr run (a checkpoint) does the same by itself before it works.
func TestCrash_CheckpointFrozen(t *testing.T) { forRuntimes(t, testCrashCheckpointFrozen) }

func testCrashCheckpointFrozen(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	b.usePrivateTmp() // a tmpfs: the checkpoint writes its tar while frozen
	b.start()
	b.waitCount(1)
	img := filepath.Join(b.dir, "checkpoint")
	b.checkpoint(0, "--leave-running")
	prev := dirSums(t, img)
	crashAt(t, "checkpoint:frozen", "checkpoint", b.id)
	b.waitStatus("paused")
	left := staged(img)
	if len(left) != 1 {
		t.Fatalf("the crash left %v beside the image, want one unfinished image", left)
	}
	if tars, _ := filepath.Glob(filepath.Join(left[0], "tmpfs-*.tar")); len(tars) == 0 {
		t.Fatalf("no tmpfs tar in the unfinished image %s: the fault point is not after the tars", left[0])
	}
	out, err := exec.Command(testutil.BuildCtrCr(t), "cleanup").CombinedOutput()
	if err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	t.Logf("cleanup:\n%s", out)
	b.waitStatus("running")
	b.waitCount(b.count())
	if s := staged(img); len(s) != 0 {
		t.Fatalf("cleanup left %v", s)
	}
	if d := sameSums(prev, dirSums(t, img)); d != "" {
		t.Fatalf("the previous image changed (%s)", d)
	}
	// again, and this time only the next ctr-cr run cleans up
	crashAt(t, "checkpoint:frozen", "checkpoint", b.id)
	b.waitStatus("paused")
	b.checkpoint(1, "--leave-running")
	b.waitStatus("running")
	b.waitCount(b.count())
	if s := staged(img); len(s) != 0 {
		t.Fatalf("the next checkpoint left %v", s)
	}
	if d := sameSums(prev, dirSums(t, img)); d == "" {
		t.Fatal("the second checkpoint did not replace the image")
	}
}

// TestCrash_RestoreCreated: ctr-cr killed right after the runtime created
// the restore's sandbox: `ctr-cr cleanup` deletes the container left
// created (and its private bundle), and the image then restores.
func TestCrash_RestoreCreated(t *testing.T) { forRuntimes(t, testCrashRestoreCreated) }

func testCrashRestoreCreated(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	b.start()
	b.waitCount(1)
	b.checkpoint(0)
	at := b.count()
	crashAt(t, "restore:created", "restore", "-d", b.dir)
	b.waitStatus("created")
	out, err := exec.Command(testutil.BuildCtrCr(t), "cleanup", "--dry-run").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "would delete container "+b.id) {
		t.Fatalf("cleanup --dry-run: %v, want it to name container %s:\n%s", err, b.id, out)
	}
	b.waitStatus("created")
	out, err = exec.Command(testutil.BuildCtrCr(t), "cleanup").CombinedOutput()
	if err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	t.Logf("cleanup:\n%s", out)
	if st, err := b.state(); err == nil {
		t.Fatalf("after cleanup the container is still there: %v", st)
	}
	if m, _ := filepath.Glob(filepath.Join("/run/ctr-cr/restore", b.id+"-*")); len(m) != 0 {
		t.Fatalf("cleanup left the private bundles %v", m)
	}
	b.restore(1)
	if c := b.waitCount(at + 1); c < at+1 {
		t.Fatalf("after cleanup, the image restores and counts from %d: %d", at, c)
	}
}

// TestCrash_CheckpointKilled: ctr-cr killed after its checkpoint killed
// the container (the image complete and in place) and before the
// runtime's delete: the runtime shows it stopped; `ctr-cr cleanup` deletes
// it as the checkpoint would have, and the image restores under the same
// id.
func TestCrash_CheckpointKilled(t *testing.T) { forRuntimes(t, testCrashCheckpointKilled) }

func testCrashCheckpointKilled(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	b.start()
	b.waitCount(1)
	crashAt(t, "checkpoint:killed", "checkpoint", b.id)
	b.waitStatus("stopped")
	at := b.count()
	out, err := exec.Command(testutil.BuildCtrCr(t), "cleanup").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "delete container "+b.id) {
		t.Fatalf("cleanup: %v, want it to delete %s:\n%s", err, b.id, out)
	}
	if st, err := b.state(); err == nil {
		t.Fatalf("after cleanup the container is still there: %v", st)
	}
	b.restore(1)
	if c := b.waitCount(at + 1); c < at+1 {
		t.Fatalf("the image restores and counts from %d: %d", at, c)
	}
}

// TestConcurrent_CheckpointRestore: checkpoints of one container at once,
// and restores of one image at once: each either works or fails with a
// "busy" error (or, for a restore that comes second, "exists already"),
// never anything else; the image left is complete and restores.
func TestConcurrent_CheckpointRestore(t *testing.T) { forRuntimes(t, testConcurrentCheckpointRestore) }

func testConcurrentCheckpointRestore(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	b.start()
	b.waitCount(1)
	bin := testutil.BuildCtrCr(t)
	both := func(args ...string) (outs [2]string, errs [2]error) {
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o, err := exec.Command(bin, args...).CombinedOutput()
				outs[i], errs[i] = string(o), err
			}()
		}
		wg.Wait()
		return
	}
	busy := 0
	for round := range 4 {
		outs, errs := both("checkpoint", "--leave-running", b.id)
		ok := 0
		for i := range 2 {
			switch {
			case errs[i] == nil:
				ok++
			case strings.Contains(outs[i], "busy"):
				busy++
			default:
				t.Fatalf("round %d: checkpoint beside another: %v\n%s", round, errs[i], outs[i])
			}
		}
		if ok == 0 {
			t.Fatalf("round %d: neither checkpoint worked:\n%s\n%s", round, outs[0], outs[1])
		}
		b.waitStatus("running")
	}
	t.Logf("%d of 8 checkpoints were busy", busy)
	if s := staged(filepath.Join(b.dir, "checkpoint")); len(s) != 0 {
		t.Fatalf("left beside the image: %v", s)
	}
	b.rt("kill", b.id, "KILL")
	b.checkpointKillable(t)
	at := b.count()
	outs, errs := both("restore", "-d", b.dir)
	ok := 0
	for i := range 2 {
		switch {
		case errs[i] == nil:
			ok++
		case strings.Contains(outs[i], "busy"), strings.Contains(outs[i], "exists already"):
		default:
			t.Fatalf("restore beside another: %v\n%s", errs[i], outs[i])
		}
	}
	if ok != 1 {
		t.Fatalf("%d restores worked, want 1:\n%s\n%s", ok, outs[0], outs[1])
	}
	b.waitStatus("running")
	b.waitCount(at + 1)
}

// checkpointKillable waits for the killed container to stop, deletes it,
// starts it again and takes a checkpoint that kills it: an image to
// restore concurrently.
func (b *bundle) checkpointKillable(t *testing.T) {
	b.waitStatus("stopped")
	if out, err := b.rt("delete", b.id); err != nil {
		t.Fatalf("delete: %v: %s", err, out)
	}
	b.start()
	b.waitCount(1)
	b.checkpoint(9)
}

// TestStress_CrashesAmongCheckpoints (make stress): three ctr-cr
// processes at a time on one container, for rounds: checkpoints with
// --leave-running and checkpoints killed with the cgroup frozen. The
// sweeps every run starts with must undo only the dead ones' leftovers,
// never a live checkpoint's: every run that is not killed either works or
// is busy (or finds the container paused by a crash not yet swept); at
// the end, after one cleanup, the container runs, nothing is left beside
// the image, no record remains, and the image restores.
func TestStress_CrashesAmongCheckpoints(t *testing.T) {
	forRuntimes(t, testStressCrashesAmongCheckpoints)
}

func testStressCrashesAmongCheckpoints(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	// the counter in a tmpfs of the container's (saved in the image): a
	// file of the rootfs changes after a --leave-running checkpoint, and
	// the restore refuses an image whose files changed
	b.usePrivateTmp()
	b.start()
	b.waitCount(1)
	bin := testutil.BuildCtrCr(t)
	var worked, busy, killed int
	var mu sync.Mutex
	for round := range 15 {
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := exec.Command(bin, "checkpoint", "--leave-running", b.id)
				crash := (round+w)%3 == 0
				if crash {
					cmd.Env = append(os.Environ(), "CTRCR_FAULT=checkpoint:frozen")
				}
				out, err := cmd.CombinedOutput()
				mu.Lock()
				defer mu.Unlock()
				ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
				switch {
				case err == nil:
					worked++
				case crash && ws.Signaled() && ws.Signal() == syscall.SIGKILL:
					killed++
				case strings.Contains(string(out), "busy"), strings.Contains(string(out), `"paused"`):
					busy++
				default:
					t.Errorf("round %d: checkpoint: %v\n%s", round, err, out)
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	t.Logf("%d worked, %d busy or paused, %d killed", worked, busy, killed)
	if out, err := exec.Command(bin, "cleanup").CombinedOutput(); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	b.waitStatus("running")
	b.waitCount(b.count())
	img := filepath.Join(b.dir, "checkpoint")
	if s := staged(img); len(s) != 0 {
		t.Fatalf("left beside the image: %v", s)
	}
	testutil.RequireNoOpRecords(t)
	if worked == 0 {
		t.Fatal("no checkpoint worked")
	}
	b.rt("kill", b.id, "KILL")
	b.waitStatus("stopped")
	if out, err := b.rt("delete", b.id); err != nil {
		t.Fatalf("delete: %v: %s", err, out)
	}
	b.restore(1)
	b.waitCount(b.count())
}

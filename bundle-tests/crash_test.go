package bundletests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestRestore_CrashAfterCreate: ctr-cr killed (SIGKILL, through the
// CTRCR_FAULT hook) right after the runtime created the sandbox from the
// restore's privileged config: the bundle's config.json is byte-identical
// (the runtime got a private copy), the runtime names the user's bundle,
// and starting the container left behind runs nothing (no process of the
// container's with the restore's privileges: it stops at once). The image
// then restores as usual.
func TestRestore_CrashAfterCreate(t *testing.T) { forRuntimes(t, testRestoreCrashAfterCreate) }

func testRestoreCrashAfterCreate(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	b.start()
	b.waitCount(1)
	b.checkpoint(0)
	cfg := filepath.Join(b.dir, "config.json")
	before, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	at := b.count()
	cmd := exec.Command(testutil.BuildCtrCr(t), "restore", "-d", b.dir)
	cmd.Env = append(os.Environ(), "CTRCR_FAULT=restore:created")
	out, err := cmd.CombinedOutput()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("restore with CTRCR_FAULT=restore:created: %v, want killed by SIGKILL\n%s", err, out)
	}
	if after, _ := os.ReadFile(cfg); !bytes.Equal(after, before) {
		t.Fatalf("config.json changed by a restore killed after the create:\n%s", after)
	}
	st, err := b.state()
	if err != nil {
		t.Fatal(err)
	}
	if st["status"] != "created" || st["bundle"] != b.dir {
		t.Fatalf("after the crash: status %v, bundle %v; want created, %s", st["status"], st["bundle"], b.dir)
	}
	// someone starts what the crash left: nothing of the container runs
	b.rt("start", b.id)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := b.state()
		if err == nil && st["status"] == "stopped" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the container left by the crash runs after start: %v %v", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c := b.count(); c != at {
		t.Fatalf("the counter moved from %d to %d: the container's process ran", at, c)
	}
	if out, err := b.rt("delete", "--force", b.id); err != nil {
		t.Fatalf("delete: %v: %s", err, out)
	}
	if ents, _ := os.ReadDir("/run/ctr-cr/restore"); len(ents) > 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Logf("private bundles left by the crash (removed by the next cleanup): %s", strings.Join(names, " "))
		for _, n := range names {
			if strings.HasPrefix(n, b.id+"-") {
				os.RemoveAll(filepath.Join("/run/ctr-cr/restore", n))
			}
		}
	}
	b.restore(1)
	if c := b.waitCount(at + 1); c < at+1 {
		t.Fatalf("after the crash, the image restores and counts from %d: %d", at, c)
	}
}

package bundletests

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// TestCheckpoint_Again: the everyday cycle, checkpoint → restore →
// checkpoint into the same BUNDLE/checkpoint (nothing removed in between) →
// restore, the counter and a tmpfs continuing. Then: a checkpoint while
// another holds the image directory fails "busy"; a checkpoint that fails
// half-way (a deleted file larger than the ghost limit, held open, appears
// in the container: refused after the tmpfs archive and the container's
// files are written) leaves the container running and the previous image
// byte for byte as it was, with nothing beside it; and that image still
// restores, the counter going on from its checkpoint.
func TestCheckpoint_Again(t *testing.T) { forRuntimes(t, testCheckpointAgain) }

// holdScript counts like counterScript; once /tmp/hold appears it keeps
// fd 3 on a 2 MiB file it deletes, and says so in /tmp/held.
const holdScript = `echo kept > /data/hello; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; ` +
	`if [ -e /tmp/hold ]; then rm /tmp/hold; exec 3>/tmp/big; busybox dd if=/dev/zero bs=1024 count=2048 >&3 2>/dev/null; rm /tmp/big; echo held > /tmp/held; fi; ` +
	`sleep 0.1; done`

func testCheckpointAgain(t *testing.T, rt string) {
	b := newBundle(t, rt, holdScript)
	b.editSpec(func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=1m"}})
	})
	b.start()
	b.waitCount(3)
	img := filepath.Join(b.dir, "checkpoint")
	var at int
	for cycle := 0; cycle < 2; cycle++ {
		before := b.count()
		if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
			t.Fatalf("cycle %d: checkpoint into %s: %v\n%s", cycle, img, err, out)
		}
		if at = b.count(); at == 0 {
			at = before
		}
		b.restore(cycle)
		if c := b.waitCount(at); c > at+50 {
			t.Fatalf("cycle %d: counter jumped from %d to %d", cycle, at, c)
		}
		requireHello(t, b, cycle)
	}
	requireNothingBeside(t, img)

	// busy: another holds the image directory's lock
	lock, err := os.OpenFile(img+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	out, err := ctrcr(t, "checkpoint", b.id)
	os.Remove(img + ".lock")
	lock.Close()
	if err == nil || !strings.Contains(out, "busy") || !strings.Contains(out, img) {
		t.Errorf("checkpoint while the image directory is locked: %v, want busy naming %s:\n%s", err, img, out)
	}
	b.waitCount(b.count())

	// a checkpoint failing half-way
	want := imageSums(t, img)
	if err := os.WriteFile(filepath.Join(b.dir, "rootfs", "tmp", "hold"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitPath(t, filepath.Join(b.dir, "rootfs", "tmp", "held"))
	out, err = ctrcr(t, "checkpoint", b.id)
	if err == nil || !strings.Contains(out, "ghost-limit") {
		t.Fatalf("checkpoint with a 2 MiB deleted file held open: %v, want the ghost limit refusal:\n%s", err, out)
	}
	pid := b.pidOf() // still running
	b.waitCount(b.count())
	if got := imageSums(t, img); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the failed checkpoint changed the previous image:\n got %v\nwant %v", got, want)
	}
	requireNothingBeside(t, img)

	// the previous image still restores, from its own counter
	if out, err := b.rt("kill", b.id, "KILL"); err != nil {
		t.Fatalf("%s kill: %v\n%s", rt, err, out)
	}
	if err := waitGone(pid, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := b.rt("delete", b.id); err != nil {
		t.Fatalf("%s delete: %v\n%s", rt, err, out)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "rootfs", "tmp", "count"), []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.restore(2)
	if c := b.waitCount(0); c <= at || c > at+50 {
		t.Errorf("restored from the previous image the counter is %d, want just after %d", c, at)
	}
	requireHello(t, b, 2)
}

// requireHello requires the restored container's /data tmpfs to hold the
// file the script wrote there.
func requireHello(t *testing.T, b *bundle, cycle int) {
	t.Helper()
	if h, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/data/hello", b.pidOf())); err != nil || string(h) != "kept\n" {
		t.Errorf("cycle %d: /data/hello in the restored container: %q %v", cycle, h, err)
	}
}

// imageSums returns the sha256 of every file of the image directory.
func imageSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]string{}
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sums[e.Name()] = fmt.Sprintf("%x", sha256.Sum256(data))[:12]
	}
	if sums["inventory.img"] == "" || sums["ctr-cr.json"] == "" {
		t.Fatalf("%s is not a complete image: %v", dir, sums)
	}
	return sums
}

// requireNothingBeside requires that no staging directory, moved-aside
// image or lock file is left next to the image directory.
func requireNothingBeside(t *testing.T, img string) {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Dir(img))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), filepath.Base(img)+".") {
			t.Errorf("left beside the image: %s", e.Name())
		}
	}
}

// waitPath waits for path to exist.
func waitPath(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

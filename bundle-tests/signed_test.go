package bundletests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestRestore_Signed: a container checkpointed with --sign-key restores
// with --verify-key, twice (the second signed checkpoint replaces the first
// in BUNDLE/checkpoint); image.sig covers container.json, spec.dump,
// ctr-cr.json and the tmpfs archive too. A copy whose container.json says
// another hostname (valid JSON, and no checksum of the inventory covers
// container.json) or whose tmpfs archive changed is refused before the
// runtime's create: no container is left.
func TestRestore_Signed(t *testing.T) { forRuntimes(t, testRestoreSigned) }

func testRestoreSigned(t *testing.T, rt string) {
	keys := filepath.Join(t.TempDir(), "signer")
	if out, err := ctrcr(t, "keygen", "--out", keys); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	b := newBundle(t, rt, "echo kept > /data/hello; "+counterScript)
	b.editSpec(func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=1m"}})
	})
	b.start()
	b.waitCount(3)
	img := filepath.Join(b.dir, "checkpoint")
	for cycle := 0; cycle < 2; cycle++ {
		// the second checkpoint replaces the first signed image in place
		if out, err := ctrcr(t, "checkpoint", "--sign-key", keys+".key", b.id); err != nil {
			t.Fatalf("cycle %d: checkpoint --sign-key: %v\n%s", cycle, err, out)
		}
		at := b.count()
		sig, err := os.ReadFile(filepath.Join(img, "image.sig"))
		if err != nil {
			t.Fatalf("cycle %d: %v", cycle, err)
		}
		for _, n := range []string{"inventory.img", "container.json", "spec.dump", "ctr-cr.json", "tmpfs-0.tar"} {
			if !strings.Contains(string(sig), " "+n+"\n") {
				t.Errorf("cycle %d: image.sig does not cover %s:\n%s", cycle, n, sig)
			}
		}
		if cycle == 0 {
			requireTamperedRefused(t, b, img, keys+".pub")
		}
		if out, err := ctrcr(t, "restore", "-d", "--verify-key", keys+".pub", b.dir); err != nil {
			t.Fatalf("cycle %d: restore --verify-key: %v\n%s", cycle, err, out)
		}
		b.pidOf()
		requireHello(t, b, cycle)
		if c := b.waitCount(at); at > 0 && c > at+50 {
			t.Fatalf("cycle %d: counter jumped from %d to %d", cycle, at, c)
		}
	}
}

// requireTamperedRefused restores copies of the signed image in img, each
// with one covered file changed, and requires each to be refused naming the
// file, with no container left.
func requireTamperedRefused(t *testing.T, b *bundle, img, pub string) {
	t.Helper()
	for _, c := range []struct {
		file   string
		change func([]byte) []byte
	}{
		{"container.json", func(d []byte) []byte {
			if !strings.Contains(string(d), "ctrcr-box") {
				t.Fatalf("container.json does not hold the hostname:\n%s", d)
			}
			return []byte(strings.Replace(string(d), "ctrcr-box", "ctrcr-bad", 1))
		}},
		{"tmpfs-0.tar", func(d []byte) []byte { d[len(d)/3] ^= 1; return d }},
	} {
		dir := filepath.Join(t.TempDir(), "img")
		if err := copyImage(img, dir); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, c.file)
		d, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, c.change(d), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := ctrcr(t, "restore", "-d", "--image-path", dir, "--verify-key", pub, b.dir)
		if err == nil || !strings.Contains(out, c.file) || !strings.Contains(out, "differs from what was signed") {
			t.Errorf("restore of an image with %s changed: %v\n%s", c.file, err, out)
		}
		if _, err := b.state(); err == nil {
			t.Fatalf("a container %s exists after the refused restore", b.id)
		}
	}
}

// copyImage copies the regular files of the image directory src to dst.
func copyImage(src, dst string) error { return testutil.CopyDir(src, dst) }

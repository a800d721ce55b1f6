package bundletests

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// containerLayerFiles are the files a container checkpoint with a tmpfs
// writes beside its process image.
var containerLayerFiles = []string{"spec.dump", "ctr-cr.json", "container.json", "tmpfs-0.tar"}

// TestRestore_LayerFileCorrupt: the container layer's files of a runc
// checkpoint are listed in its inventory with their checksums: a copy
// with one byte of any of them flipped, or with a layer file added that
// the inventory does not list, is refused at restore naming the file,
// before the runtime's create (no container left). An image of the
// previous format, whose inventory did not list them, still restores. A
// pre-dump round's ctr-cr-predump.json is listed and checked too.
func TestRestore_LayerFileCorrupt(t *testing.T) {
	b := newBundle(t, "runc", "echo kept > /data/hello; "+counterScript)
	b.editSpec(func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=1m"}})
	})
	b.start()
	b.waitCount(3)
	if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}
	img := filepath.Join(b.dir, "checkpoint")
	inv := &imagepb.Inventory{}
	readImageFile(t, img, image.InventoryName, inv)
	for _, n := range containerLayerFiles {
		if !slices.ContainsFunc(inv.Files, func(f *imagepb.FileSum) bool { return f.Name == n && len(f.Checksum) > 0 }) {
			t.Errorf("inventory.img does not list %s with a checksum", n)
		}
	}
	for _, n := range containerLayerFiles {
		requireLayerRefused(t, b, img, n, "checksum mismatch", func(dir string) {
			p := filepath.Join(dir, n)
			d, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			d[len(d)/2] ^= 0x20
			if err := os.WriteFile(p, d, 0o600); err != nil {
				t.Fatal(err)
			}
		})
	}
	requireLayerRefused(t, b, img, "descriptors.json", "not listed in inventory.img", func(dir string) {
		if err := os.WriteFile(filepath.Join(dir, "descriptors.json"), []byte(`["/dev/null"]`), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	// the previous format: the layer files beside the image, unlisted
	unlistLayerFiles(t, img)
	b.restore(1)
	requireHello(t, b, 1)
	b.waitCount(b.count())
	requirePreDumpLayerChecked(t, b)
}

// requirePreDumpLayerChecked: a pre-dump round lists its
// ctr-cr-predump.json too: the final checkpoint on it restores, and not
// once a byte of that file changed (refused naming it, no container left).
func requirePreDumpLayerChecked(t *testing.T, b *bundle) {
	t.Helper()
	imgs := t.TempDir()
	if out, err := ctrcr(t, "checkpoint", "--pre-dump", "--image-path", filepath.Join(imgs, "r1"), b.id); err != nil {
		t.Fatalf("pre-dump: %v\n%s", err, out)
	}
	inv := &imagepb.Inventory{}
	readImageFile(t, filepath.Join(imgs, "r1"), image.InventoryName, inv)
	if !slices.ContainsFunc(inv.Files, func(f *imagepb.FileSum) bool { return f.Name == "ctr-cr-predump.json" }) {
		t.Errorf("the pre-dump round's inventory.img does not list ctr-cr-predump.json")
	}
	at := b.count()
	if out, err := ctrcr(t, "checkpoint", "--parent-path", "../r1", "--image-path", filepath.Join(imgs, "r2"), b.id); err != nil {
		t.Fatalf("final checkpoint: %v\n%s", err, out)
	}
	p := filepath.Join(imgs, "r1", "ctr-cr-predump.json")
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	changed := append([]byte(nil), orig...)
	changed[len(changed)/2] ^= 0x20
	if err := os.WriteFile(p, changed, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := ctrcr(t, "restore", "-d", "--image-path", filepath.Join(imgs, "r2"), b.dir)
	if err == nil || !strings.Contains(out, "ctr-cr-predump.json: checksum mismatch") {
		t.Errorf("restore on a pre-dump round with ctr-cr-predump.json changed: %v\n%s", err, out)
	}
	if _, err := b.state(); err == nil {
		t.Fatalf("a container %s exists after the refused restore", b.id)
	}
	if err := os.WriteFile(p, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := ctrcr(t, "restore", "-d", "--image-path", filepath.Join(imgs, "r2"), b.dir); err != nil {
		t.Fatalf("restore from the final checkpoint: %v\n%s", err, out)
	}
	b.waitCount(at + 1)
}

// requireLayerRefused restores a copy of the image in img changed by
// change, and requires the restore to fail naming file and want, with no
// container left.
func requireLayerRefused(t *testing.T, b *bundle, img, file, want string, change func(dir string)) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	if err := copyImage(img, dir); err != nil {
		t.Fatal(err)
	}
	change(dir)
	out, err := ctrcr(t, "restore", "-d", "--image-path", dir, b.dir)
	if err == nil || !strings.Contains(out, file) || !strings.Contains(out, want) {
		t.Errorf("restore of an image with %s changed: %v (want %q)\n%s", file, err, want, out)
	}
	if _, err := b.state(); err == nil {
		t.Fatalf("a container %s exists after the refused restore", b.id)
	}
}

// unlistLayerFiles rewrites the inventory of the image in dir as the
// previous format (2) wrote it: the container layer's files not listed.
func unlistLayerFiles(t *testing.T, dir string) {
	t.Helper()
	inv := &imagepb.Inventory{}
	data := readImageFile(t, dir, image.InventoryName, inv)
	inv.FormatVersion = 2
	inv.Files = slices.DeleteFunc(inv.Files, func(f *imagepb.FileSum) bool {
		k, _, err := image.KindOf(f.Name)
		return err == nil && k.Layer
	})
	writeImageFile(t, dir, image.InventoryName, data, inv)
}

// relistFile records the size and SHA-256 of dir/name, as it is now, in
// the image's inventory, as a hostile editor of an image would: what the
// restore checks then is the file's contents.
func relistFile(t *testing.T, dir, name string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	inv := &imagepb.Inventory{}
	invData := readImageFile(t, dir, image.InventoryName, inv)
	sum := sha256.Sum256(data)
	listed := false
	for _, f := range inv.Files {
		if f.Name == name {
			f.Size, f.Checksum, f.ChecksumAlgo = uint64(len(data)), sum[:], "sha256"
			listed = true
		}
	}
	if !listed {
		t.Fatalf("%s is not in the inventory", name)
	}
	writeImageFile(t, dir, image.InventoryName, invData, inv)
}

package bundletests

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// TestRestore_CeilingMounts: a checkpoint whose container.json was edited
// to make /proc/sys (a linux.readonlyPaths entry of the default config)
// read-write is refused at restore, naming the mount, and no container is
// left behind; the unedited image then restores.
func TestRestore_CeilingMounts(t *testing.T) { forRuntimes(t, testRestoreCeilingMounts) }

func testRestoreCeilingMounts(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	b.start()
	b.waitCount(1)
	if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}
	path := filepath.Join(b.dir, "checkpoint", "container.json")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	writeEditedState(t, path, orig, func(st map[string]any) {
		found := false
		tree, _ := st["mounts"].(map[string]any)
		ms, _ := tree["mounts"].([]any)
		for _, m := range ms {
			m := m.(map[string]any)
			if m["mount_point"] == "/proc/sys" {
				delete(m["flags"].(map[string]any), "ro")
				found = true
			}
		}
		if !found {
			t.Fatalf("container.json has no /proc/sys mount:\n%s", orig)
		}
	})
	b.requireRefused("a container.json with /proc/sys read-write", "mount /proc/sys: container.json makes it read-write", "linux.readonlyPaths")
	writeListed(t, path, orig)
	b.restore(1)
	pid := b.pidOf()
	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == "/proc/sys" && !strings.HasPrefix(f[5], "ro") {
			t.Errorf("restored /proc/sys is not read-only: %s", l)
		}
	}
}

// TestRestore_CeilingCaps: a checkpoint whose task was given
// CAP_SYS_ADMIN (outside the default config's bounding set) in its image
// is refused at restore, naming the pid and the capability, and no
// container is left behind; the unedited image then restores.
func TestRestore_CeilingCaps(t *testing.T) { forRuntimes(t, testRestoreCeilingCaps) }

func testRestoreCeilingCaps(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	b.start()
	b.waitCount(1)
	if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}
	dir := filepath.Join(b.dir, "checkpoint")
	name, pid := firstCore(t, dir)
	restoreFiles := saveFiles(t, dir, name, image.InventoryName)
	editImageEntry(t, dir, name, &imagepb.TaskCore{}, func(m proto.Message) {
		m.(*imagepb.TaskCore).Threads[0].Creds.CapPrm |= 1 << 21 // CAP_SYS_ADMIN
	})
	b.requireRefused("a task with CAP_SYS_ADMIN", fmt.Sprintf("pid %d: permitted capabilities CAP_SYS_ADMIN", pid))
	restoreFiles()
	b.restore(1)
	b.waitCount(b.count())
}

// saveFiles keeps the named files of dir and returns a function that
// writes them back.
func saveFiles(t *testing.T, dir string, names ...string) func() {
	t.Helper()
	saved := map[string][]byte{}
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		saved[n] = data
	}
	return func() {
		t.Helper()
		for n, data := range saved {
			if err := os.WriteFile(filepath.Join(dir, n), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// editImageEntry rewrites the first entry of the image file name (decoded
// into msg, changed by edit) and signs the file anew in the inventory
// (size and SHA-256), as a hostile editor of an image would.
func editImageEntry(t *testing.T, dir, name string, msg proto.Message, edit func(proto.Message)) {
	t.Helper()
	data := readImageFile(t, dir, name, msg)
	edit(msg)
	data = writeImageFile(t, dir, name, data, msg)
	inv := &imagepb.Inventory{}
	invData := readImageFile(t, dir, image.InventoryName, inv)
	sum := sha256.Sum256(data)
	signed := false
	for _, f := range inv.Files {
		if f.Name == name {
			f.Size, f.Checksum, f.ChecksumAlgo = uint64(len(data)), sum[:], "sha256"
			signed = true
		}
	}
	if !signed {
		t.Fatalf("%s is not in the inventory", name)
	}
	writeImageFile(t, dir, image.InventoryName, invData, inv)
}

// readImageFile decodes the first entry of an image file (magic, then
// entries each after a little-endian u32 length) into msg and returns the
// file's bytes.
func readImageFile(t *testing.T, dir, name string, msg proto.Message) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 8 {
		t.Fatalf("%s: %d bytes", name, len(data))
	}
	n := int(binary.LittleEndian.Uint32(data[4:8]))
	if len(data) < 8+n {
		t.Fatalf("%s: entry of %d bytes in a file of %d", name, n, len(data))
	}
	if err := proto.Unmarshal(data[8:8+n], msg); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return data
}

// writeImageFile replaces the first entry of the image file (old bytes
// data) by msg, keeping the magic and any later entries, and returns the
// new bytes.
func writeImageFile(t *testing.T, dir, name string, data []byte, msg proto.Message) []byte {
	t.Helper()
	n := int(binary.LittleEndian.Uint32(data[4:8]))
	body, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte(nil), data[:4]...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(body)))
	out = append(out, body...)
	out = append(out, data[8+n:]...)
	if err := os.WriteFile(filepath.Join(dir, name), out, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// requireRefused runs `ctr-cr restore -d BUNDLE` and requires it to fail
// with every one of wants in its output, and no container left behind.
func (b *bundle) requireRefused(what string, wants ...string) {
	b.t.Helper()
	out, err := ctrcr(b.t, "restore", "-d", b.dir)
	for _, w := range wants {
		if err == nil || !strings.Contains(out, w) {
			b.t.Fatalf("restore of %s: %v (want %q)\n%s", what, err, w, out)
		}
	}
	if _, err := b.state(); err == nil {
		b.t.Fatalf("a container %s exists after the refused restore", b.id)
	}
}

// writeEditedState writes over path (container.json) the JSON document
// orig edited by fn, listed anew in the inventory (writeListed).
func writeEditedState(t *testing.T, path string, orig []byte, fn func(st map[string]any)) {
	t.Helper()
	var st map[string]any
	if err := json.Unmarshal(orig, &st); err != nil {
		t.Fatal(err)
	}
	fn(st)
	edited, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	writeListed(t, path, edited)
}

// writeListed writes data over path, a file of an image that its
// inventory lists (container.json), and records its new size and checksum
// there: the restore then checks what the file says, not its checksum.
func writeListed(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	relistFile(t, filepath.Dir(path), filepath.Base(path))
}

package restore

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// writeNetLockImage writes a minimal image whose inventory names the
// network lock table name.
func writeNetLockImage(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	w, err := image.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := w.WritePstree([]*imagepb.PstreeEntry{{Pid: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(&imagepb.Inventory{RootPid: 1, NetLock: name}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestOpenChecksNetLockName: Open, the one validation a container restore
// runs before RestoreImage (which locks the network again, Relock), refuses a network lock name
// the dump cannot have made (an image is not trusted to name any table).
func TestOpenChecksNetLockName(t *testing.T) {
	if _, err := Open(writeNetLockImage(t, "")); err != nil {
		t.Fatalf("no lock: %v", err)
	}
	_, err := Open(writeNetLockImage(t, "filter; flush ruleset"))
	if err == nil || !strings.Contains(err.Error(), "validate: bad network lock name") {
		t.Fatalf("bad lock name: %v", err)
	}
	if _, err := Restore(context.Background(), writeNetLockImage(t, "inet filter"), Options{Relock: true}); err == nil || !strings.Contains(err.Error(), "bad network lock name") {
		t.Fatalf("a relocking restore with a bad lock name: %v", err)
	}
}

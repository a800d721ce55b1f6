package restore

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// TestLoadRefusesMissingCreds: a task whose credentials are missing from
// the image (or incomplete) is refused before anything is made: it would
// otherwise keep every privilege of the restorer's stub.
func TestLoadRefusesMissingCreds(t *testing.T) {
	full := &imagepb.Creds{Uids: []uint32{1000, 1000, 1000, 1000}, Gids: []uint32{1000, 1000, 1000, 1000}}
	for _, c := range []struct {
		name  string
		creds []*imagepb.Creds // per thread
	}{
		{"no creds", []*imagepb.Creds{nil}},
		{"second thread without creds", []*imagepb.Creds{full, nil}},
		{"uids cut short", []*imagepb.Creds{{Uids: []uint32{1000}, Gids: full.Gids}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir() + "/img"
			w, err := image.Create(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			tids := []int32{}
			core := &imagepb.TaskCore{Pid: 10, Comm: "victim"}
			for i, cr := range c.creds {
				tid := int32(10 + i)
				tids = append(tids, tid)
				core.Threads = append(core.Threads, &imagepb.ThreadCore{Tid: tid, Regs: bytes.Repeat([]byte{0}, 27*8), Xsave: make([]byte, 576), Creds: cr})
			}
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(w.WritePstree([]*imagepb.PstreeEntry{{Pid: 10, Pgid: 10, Sid: 10, Threads: tids}}))
			must(w.WriteFiles(nil))
			must(w.WriteCore(10, core))
			must(w.Finish(&imagepb.Inventory{}))
			img, err := image.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = load(img)
			if err == nil || !errors.Is(err, image.ErrCorrupt) || !strings.Contains(err.Error(), "credentials") {
				t.Fatalf("load: %v, want a refusal naming the credentials", err)
			}
		})
	}
}

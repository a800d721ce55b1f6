package files

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// TestPipeRefillOnce: two read descriptions of one pipe get the queued data
// once; data larger than the capacity is a clear error, not a hang.
func TestPipeRefillOnce(t *testing.T) {
	data := []byte("queued")
	o, err := NewOpener([]*imagepb.FileEntry{
		{Id: 1, Kind: imagepb.FileKind_FILE_PIPE, Ino: 7, Flags: unix.O_RDONLY, Size: 4096, GhostData: data},
		{Id: 2, Kind: imagepb.FileKind_FILE_PIPE, Ino: 7, Flags: unix.O_RDONLY | oLargefile, Size: 4096, GhostData: data},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Finish()
	a, err := o.Open(1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Open(2); err != nil {
		t.Fatal(err)
	}
	var n int
	if n, err = unix.IoctlGetInt(a, unix.TIOCINQ); err != nil || n != len(data) {
		t.Fatalf("FIONREAD %d (%v), want %d", n, err, len(data))
	}

	big := make([]byte, 2*4096+1)
	o2, err := NewOpener([]*imagepb.FileEntry{{Id: 1, Kind: imagepb.FileKind_FILE_PIPE, Ino: 8, Flags: unix.O_RDONLY, Size: 4096, GhostData: big}})
	if err != nil {
		t.Fatal(err)
	}
	defer o2.Finish()
	if _, err := o2.Open(1); !errors.Is(err, ErrPipeFull) {
		t.Fatalf("open: %v, want ErrPipeFull", err)
	}
	if _, err := NewOpener([]*imagepb.FileEntry{
		{Id: 1, Kind: imagepb.FileKind_FILE_PIPE, Ino: 9, GhostData: []byte("a")},
		{Id: 2, Kind: imagepb.FileKind_FILE_PIPE, Ino: 9, GhostData: []byte("b")},
	}); err == nil {
		t.Fatal("two different queued data records accepted")
	}
}

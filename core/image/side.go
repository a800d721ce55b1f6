package image

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// WriteSide writes data as dir/name, a file beside the image files that a
// layer above the core (namespaces.json) fills; Abort removes it. It
// returns the SHA-256 of data, for the inventory to record.
func (w *Writer) WriteSide(name string, data []byte) ([]byte, error) {
	f, err := w.createFile(name)
	if err != nil {
		return nil, err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, loc{w.dir, name}.err(err)
	}
	s := sha256.Sum256(data)
	return s[:], nil
}

// ReadSide reads dir/name written by WriteSide (a regular file, at most
// max bytes) and checks it against sum, the SHA-256 the inventory holds.
func ReadSide(dir, name string, sum []byte, max int64) ([]byte, error) {
	l := loc{dir, name}
	f, err := os.OpenFile(dir+"/"+name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, l.err(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, l.err(err)
	}
	if !fi.Mode().IsRegular() {
		return nil, l.err(fmt.Errorf("%w: not a regular file", ErrCorrupt))
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, l.err(err)
	}
	if int64(len(b)) > max {
		return nil, l.err(fmt.Errorf("%w: larger than %d bytes", ErrCorrupt, max))
	}
	s := sha256.Sum256(b)
	if !bytes.Equal(s[:], sum) {
		return nil, l.err(ErrChecksum)
	}
	return b, nil
}

// ReadInventory reads dir/inventory.img alone (the version checked, the
// rest of the image not looked at): what a caller needs to decide how to
// restore before the restore opens the whole image.
func ReadInventory(dir string) (*imagepb.Inventory, error) { return readInventory(dir) }

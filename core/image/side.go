package image

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
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

// ListLayerFile lists dir/name, a file of a Layer kind that the layer
// above wrote into the image directory before the dump (the container
// layer's spec.dump, ctr-cr.json, tmpfs-N.tar, ...), in the inventory with
// its size and checksum, so that Open verifies it like any image file. The
// file is hashed now: it must not change after. Abort leaves it (its
// writer owns it).
func (w *Writer) ListLayerFile(name string) error {
	l := loc{w.dir, name}
	k, _, err := kindOf(name)
	if err != nil {
		return l.err(err)
	}
	if !k.Layer {
		return l.err(fmt.Errorf("%s files are written by the image writer, not listed", k.Name))
	}
	if err := w.reserve(name); err != nil {
		return err
	}
	f, fi, err := openRegular(filepath.Join(w.dir, name), false)
	if err != nil {
		return l.err(err)
	}
	defer f.Close()
	h := newWriteSum()
	n, err := io.CopyBuffer(h, f, make([]byte, bufSize(uint64(fi.Size()), 128<<10)))
	if err != nil {
		return l.err(err)
	}
	w.record(name, n, h.Sum(nil))
	return nil
}

// ReadLayerFile returns the contents of the listed layer file name (at
// most max bytes), verifying its checksum against the inventory: what Open
// validated, even if the directory changed since.
func (r *Reader) ReadLayerFile(name string, max int64) ([]byte, error) {
	l := loc{r.dir, name}
	if k, _, err := kindOf(name); err != nil || !k.Layer {
		return nil, l.err(fmt.Errorf("not a layer file"))
	}
	f, sum, err := r.openListed(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if int64(sum.Size) > max {
		return nil, l.err(fmt.Errorf("%w: larger than %d bytes", ErrCorrupt, max))
	}
	h, err := newSum(sum.ChecksumAlgo)
	if err != nil {
		return nil, l.err(err)
	}
	b := make([]byte, sum.Size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, l.err(fmt.Errorf("%w: %w", ErrChecksum, err))
	}
	h.Write(b)
	if err := finishSum(l, sum, f, h, int64(len(b)), func() []byte { return h.Sum(nil) }); err != nil {
		return nil, err
	}
	return b, nil
}

// OpenLayerFile opens the listed layer file name for reading, after
// checking its size. Its contents are not hashed again (Open verified
// them, and the caller streams them once, as OpenPages's). The caller
// closes it.
func (r *Reader) OpenLayerFile(name string) (*os.File, error) {
	if k, _, err := kindOf(name); err != nil || !k.Layer {
		return nil, loc{r.dir, name}.err(fmt.Errorf("not a layer file"))
	}
	f, _, err := r.openListed(name)
	return f, err
}

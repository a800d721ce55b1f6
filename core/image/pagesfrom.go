package image

import (
	"fmt"
	"io"
	"io/fs"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// PagesSource is what a pages file is read from: the file in the image
// directory, or (OpenOptions.PagesFrom) a lazy page server's copy.
type PagesSource interface {
	io.ReaderAt
	io.Closer
}

// openPagesFile opens pages file name from the directory, or from
// pagesFrom when set: its checksum is then always deferred to the reader
// (Pages.Verify).
func (r *Reader) openPagesFile(name string) (PagesSource, *imagepb.FileSum, error) {
	if r.pagesFrom == nil {
		f, sum, err := r.openListed(name)
		if err != nil {
			return nil, nil, err
		}
		return f, sum, nil
	}
	l := loc{r.dir, name}
	sum := r.sums[name]
	if sum == nil {
		return nil, nil, l.err(fmt.Errorf("not in this image: %w", fs.ErrNotExist))
	}
	f, err := r.pagesFrom(name)
	if err != nil {
		return nil, nil, l.err(err)
	}
	r.deferred[name] = true
	return f, sum, nil
}

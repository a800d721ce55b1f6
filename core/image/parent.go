package image

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// A pre-copy chain (issue 16): every image but the first of a chain names
// the image of the round before it (Inventory.parent_path, relative to its
// own directory) and the SHA-256 of that image's inventory.img, which lists
// the size and checksum of every file of it: a parent that was replaced,
// re-dumped or altered no longer matches. parentmap-<pid>.img lists the
// pages of process pid that were not written since the parent round and
// are read from the parent (which may take them from its own parent).

// MaxChain bounds the length of a chain (and catches a cycle of links).
const MaxChain = 256

// ErrChain is wrapped by errors about a pre-copy chain: a parent missing,
// replaced or damaged, or a cycle.
var ErrChain = errors.New("image chain")

// WriteParentmap writes parentmap-<pid>.img: the runs of pid's pages that
// are in the parent image, in ascending address order.
func (w *Writer) WriteParentmap(pid int, runs []*imagepb.PagemapEntry) error {
	if err := checkRuns(runs); err != nil {
		return loc{dir: w.dir}.err(err)
	}
	return w.writeKind(kindParentmap, strconv.Itoa(pid), toMessages(runs))
}

// Parentmap returns the runs of parentmap-<pid>.img (nil when the image
// has none for pid), validated: page-aligned, non-empty, not overlapping.
func (r *Reader) Parentmap(pid int) ([]*imagepb.PagemapEntry, error) {
	name, err := fileName(kindParentmap, strconv.Itoa(pid))
	if err != nil {
		return nil, loc{dir: r.dir}.err(err)
	}
	if !r.Has(name) {
		return nil, nil
	}
	msgs, err := r.ReadEntries(name)
	if err != nil {
		return nil, err
	}
	runs := entriesAs[*imagepb.PagemapEntry](msgs)
	if err := checkRuns(runs); err != nil {
		return nil, loc{r.dir, name}.err(err)
	}
	return runs, nil
}

// InventorySum returns the SHA-256 of dir/inventory.img: the identity of
// the image a child of it records.
func InventorySum(dir string) ([]byte, error) {
	f, _, err := openRegular(filepath.Join(dir, InventoryName), false)
	if err != nil {
		return nil, loc{dir, InventoryName}.err(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, loc{dir, InventoryName}.err(err)
	}
	return h.Sum(nil), nil
}

// ParentDir returns the directory of the parent of the image in dir whose
// inventory says parentPath: relative paths are relative to dir.
func ParentDir(dir, parentPath string) string {
	if filepath.IsAbs(parentPath) {
		return filepath.Clean(parentPath)
	}
	return filepath.Join(dir, parentPath)
}

// OpenChain opens and validates every ancestor of r, nearest first (none
// for an image without a parent): each must exist, be the very image the
// child was made against (its inventory's SHA-256) and pass Open's checks
// (every file's checksum, pages included). Errors wrap ErrChain and name the
// image and the parent.
func OpenChain(r *Reader) ([]*Reader, error) { return OpenChainWith(r, OpenOptions{}) }

// OpenChainWith is OpenChain opening the parents with options o.
func OpenChainWith(r *Reader, o OpenOptions) ([]*Reader, error) {
	var chain []*Reader
	seen := map[string]bool{}
	if abs, err := filepath.Abs(r.Dir()); err == nil {
		seen[abs] = true
	}
	cur := r
	for cur.inv.GetParentPath() != "" {
		if len(chain) >= MaxChain {
			return nil, fmt.Errorf("%w: %s: more than %d parents", ErrChain, r.Dir(), MaxChain)
		}
		p, err := OpenParentWith(cur, o)
		if err != nil {
			return nil, err
		}
		abs, _ := filepath.Abs(p.Dir())
		if seen[abs] {
			return nil, fmt.Errorf("%w: %s: parent %s is already in the chain (a cycle)", ErrChain, cur.Dir(), p.Dir())
		}
		seen[abs] = true
		chain = append(chain, p)
		cur = p
	}
	return chain, nil
}

// OpenParent opens and validates the parent of r (see OpenChain), not its
// ancestors.
func OpenParent(r *Reader) (*Reader, error) { return OpenParentWith(r, OpenOptions{}) }

// OpenParentWith is OpenParent with options o.
func OpenParentWith(r *Reader, o OpenOptions) (*Reader, error) {
	inv := r.inv
	dir := ParentDir(r.Dir(), inv.GetParentPath())
	what := fmt.Sprintf("%s: parent image %s", r.Dir(), dir)
	if _, err := os.Stat(filepath.Join(dir, InventoryName)); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s is missing (the images of a pre-copy chain must stay where they were written, or be moved together)", ErrChain, what)
	}
	sum, err := InventorySum(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrChain, what, err)
	}
	if string(sum) != string(inv.GetParentInventorySha256()) {
		return nil, fmt.Errorf("%w: %s is not the image this one was dumped against (its inventory changed: replaced, re-dumped or altered)", ErrChain, what)
	}
	p, err := OpenWith(dir, o)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrChain, what, err)
	}
	return p, nil
}

// checkParentmapRef is the cross-file check of a parentmap: only an image
// with a parent may have one.
func checkParentmapRef(l loc, inv *imagepb.Inventory) error {
	if inv.GetParentPath() == "" {
		return l.corrupt(-1, -1, "pages in a parent image, but inventory.img names no parent")
	}
	return nil
}

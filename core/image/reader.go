package image

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"google.golang.org/protobuf/proto"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Reader reads a validated image directory. Every method re-verifies the
// checksum (CRC-32C, or SHA-256 in older images) of the file it decodes, so
// it returns exactly what Open validated even if the directory changed
// since. A Reader is safe for concurrent use.
type Reader struct {
	dir  string
	inv  *imagepb.Inventory
	sums map[string]*imagepb.FileSum
	// deferred: pages files whose checksum Open left to OpenPages's reader
	deferred map[string]bool
	// pagesFrom: OpenOptions.PagesFrom
	pagesFrom func(name string) (PagesSource, error)
}

// OpenOptions change what Open checks up front.
type OpenOptions struct {
	// DeferPages leaves the checksums of the pages files (most of a large
	// image's bytes) to whoever reads them through OpenPages: the Pages
	// returned hashes what is read, in order, and Verify compares. A
	// restore reads every page once anyway, and hashing them in a pass of
	// their own first took ~30% of a 1 GiB restore. Everything else,
	// including the pages files' sizes against their pagemaps, is still
	// checked by Open.
	DeferPages bool
	// PagesElsewhere leaves the pages files alone: not opened, not even
	// looked for (a dump sent them to a page server); their sizes come
	// from the inventory. OpenPages must not be used then.
	PagesElsewhere bool
	// PagesFrom, when set, is where OpenPages reads the pages files
	// (by file name) instead of the directory: a lazy restore's page
	// server (pagesfrom.go). Their checksums are deferred as with
	// DeferPages.
	PagesFrom func(name string) (PagesSource, error)
}

// Open reads inventory.img of the image in dir and validates the whole
// image before anything is restored from it:
//   - inventory.img: magic, one Inventory entry, format_version ==
//     FormatVersion (else an error wrapping ErrVersion), a valid file list;
//   - every listed file is a regular file (not a symlink) with the recorded
//     size and checksum (else an error wrapping ErrChecksum naming it; with
//     OpenOptions.DeferPages the pages files' checksums are left to their
//     reader, see OpenPages);
//   - no *.img file in dir is missing from the list;
//   - every file decodes: magic, framing, message types, entry counts;
//   - references between files (refs.go), including pagemap runs against
//     the size of their pages file.
//
// Files are checked in name order and the first problem is returned as an
// *Error.
func Open(dir string) (*Reader, error) { return OpenWith(dir, OpenOptions{}) }

// OpenWith is Open with options.
func OpenWith(dir string, o OpenOptions) (*Reader, error) {
	inv, err := readInventory(dir)
	if err != nil {
		return nil, err
	}
	sums, err := checkFileList(loc{dir, InventoryName}, inv)
	if err != nil {
		return nil, err
	}
	r := &Reader{dir: dir, inv: inv, sums: sums, deferred: map[string]bool{}, pagesFrom: o.PagesFrom}
	if err := r.checkStray(); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(sums))
	for n := range sums {
		names = append(names, n)
	}
	slices.Sort(names)
	x := newRefIndex(inv)
	for _, name := range names {
		k, arg, _ := kindOf(name) // checked by checkFileList
		if k.Layer {
			if err := r.verifyRaw(name); err != nil {
				return nil, err
			}
			continue
		}
		if k.Raw {
			if o.PagesElsewhere && k.Name == kindPages {
				continue
			}
			if (o.DeferPages || o.PagesFrom != nil) && k.Name == kindPages {
				r.deferred[name] = true
				continue
			}
			if err := r.verifyRaw(name); err != nil {
				return nil, err
			}
			continue
		}
		msgs, err := r.ReadEntries(name)
		if err != nil {
			return nil, err
		}
		if err := x.add(loc{dir, name}, k, arg, msgs); err != nil {
			return nil, err
		}
	}
	if err := x.check(r); err != nil {
		return nil, err
	}
	return r, nil
}

// readInventory reads and decodes dir/inventory.img, checking the format
// version as soon as the entry is decoded so that a future image gets a
// version error rather than a confusing structural one.
func readInventory(dir string) (*imagepb.Inventory, error) {
	l := loc{dir, InventoryName}
	f, fi, err := openRegular(filepath.Join(dir, InventoryName), false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, l.err(fmt.Errorf("missing, so this is not a complete image (did the dump finish?): %w", fs.ErrNotExist))
	}
	if err != nil {
		return nil, l.err(err)
	}
	defer f.Close()
	if max := int64(magicSize + headerSize + MaxEntrySize); fi.Size() > max {
		return nil, l.corrupt(-1, -1, "%d bytes is larger than an inventory can be (%d)", fi.Size(), max)
	}
	msgs, err := decodeFile(bufio.NewReader(f), fi.Size(), kindByName(kindInventory), l, checkVersion(l))
	if err != nil {
		return nil, err
	}
	return msgs[0].(*imagepb.Inventory), nil
}

func checkVersion(l loc) func(int, proto.Message) error {
	return func(idx int, m proto.Message) error {
		if v := m.(*imagepb.Inventory).GetFormatVersion(); idx == 0 && (v < MinFormatVersion || v > FormatVersion) {
			return l.err(fmt.Errorf("%w %d (this ctr-cr reads versions %d to %d)", ErrVersion, v, MinFormatVersion, FormatVersion))
		}
		return nil
	}
}

// checkFileList validates the inventory's file list and returns it by
// name: known kinds only, no duplicates, 32-byte checksums, plausible sizes,
// and every pages file paired with its pagemap.
func checkFileList(l loc, inv *imagepb.Inventory) (map[string]*imagepb.FileSum, error) {
	sums := make(map[string]*imagepb.FileSum, len(inv.Files))
	for i, s := range inv.Files {
		bad := func(format string, args ...any) error {
			return l.corrupt(0, -1, "files[%d] %q: "+format, append([]any{i, s.GetName()}, args...)...)
		}
		k, _, err := kindOf(s.GetName())
		switch {
		case err != nil:
			return nil, bad("not an image file name")
		case k.Name == kindInventory:
			return nil, bad("the inventory cannot list itself")
		case sums[s.Name] != nil:
			return nil, bad("listed twice")
		case checksumSizeErr(s) != nil:
			return nil, bad("%v", checksumSizeErr(s))
		case s.Size > 1<<62:
			return nil, bad("size %d is implausible", s.Size)
		case k.Raw && s.Size%PageSize != 0:
			return nil, bad("size %d is not a multiple of the page size", s.Size)
		case !k.Raw && !k.Layer && s.Size < magicSize:
			return nil, bad("size %d is too small for a magic", s.Size)
		}
		sums[s.Name] = s
	}
	for name := range sums {
		k, arg, _ := kindOf(name)
		var other string
		switch k.Name {
		case kindPages:
			other, _ = fileName(kindPagemap, arg)
		case kindPagemap:
			other, _ = fileName(kindPages, arg)
		default:
			continue
		}
		if sums[other] == nil {
			return nil, l.corrupt(0, -1, "%s is listed without %s", name, other)
		}
	}
	return sums, nil
}

// checkStray fails if dir holds a *.img file the inventory does not list,
// or, from format version 3, a layer file (a Layer kind's name) it does
// not list: one added or swapped in after the dump.
func (r *Reader) checkStray() error {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return loc{dir: r.dir}.err(err)
	}
	layerListed := r.LayerFilesListed()
	for _, e := range ents {
		n := e.Name()
		if n == InventoryName || r.sums[n] != nil {
			continue
		}
		if strings.HasSuffix(n, ".img") {
			return loc{r.dir, n}.err(fmt.Errorf("%w: not listed in inventory.img (stray or left over from another dump)", ErrCorrupt))
		}
		if k, _, err := kindOf(n); err == nil && k.Layer && layerListed {
			return loc{r.dir, n}.err(fmt.Errorf("%w: not listed in inventory.img, which lists every file of the image (added after the dump?)", ErrCorrupt))
		}
	}
	return nil
}

// LayerFilesListed reports whether the image's inventory lists the files
// of the layer above (format version 3 on): then every one of them is
// listed and checked; an older image's are not (the layer reads them
// unchecked, as it did).
func (r *Reader) LayerFilesListed() bool { return r.inv.GetFormatVersion() >= layerListedVersion }

// openRegular opens path read-only, refusing anything but a regular file
// (a FIFO would block, a device never end) and, unless follow, symlinks.
func openRegular(path string, follow bool) (*os.File, fs.FileInfo, error) {
	flags := os.O_RDONLY | syscall.O_NONBLOCK
	if !follow {
		flags |= syscall.O_NOFOLLOW
	}
	f, err := os.OpenFile(path, flags, 0)
	if errors.Is(err, syscall.ELOOP) && !follow {
		return nil, nil, fmt.Errorf("%w: is a symbolic link, want a regular file", ErrCorrupt)
	}
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%w: not a regular file (%v)", ErrCorrupt, fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// openListed opens a file of the inventory and checks its size.
func (r *Reader) openListed(name string) (*os.File, *imagepb.FileSum, error) {
	l := loc{r.dir, name}
	sum := r.sums[name]
	if sum == nil {
		return nil, nil, l.err(fmt.Errorf("not in this image: %w", fs.ErrNotExist))
	}
	f, fi, err := openRegular(filepath.Join(r.dir, name), false)
	if err != nil {
		return nil, nil, l.err(err)
	}
	if fi.Size() != int64(sum.Size) {
		f.Close()
		return nil, nil, l.err(fmt.Errorf("%w: size %d, inventory.img records %d", ErrChecksum, fi.Size(), sum.Size))
	}
	return f, sum, nil
}

// finishSum hashes what is left of the file's recorded size from br into h
// and compares the result and the size with the inventory.
func finishSum(l loc, sum *imagepb.FileSum, br io.Reader, h io.Writer, hashed int64, sumOf func() []byte) error {
	size := int64(sum.Size)
	if rest := size - hashed; rest > 0 {
		n, _ := io.CopyN(h, br, rest)
		hashed += n
	}
	var one [1]byte
	if m, _ := io.ReadFull(br, one[:]); m > 0 || hashed != size {
		return l.err(fmt.Errorf("%w: size changed while reading, inventory.img records %d", ErrChecksum, size))
	}
	if !bytes.Equal(sumOf(), sum.Checksum) {
		return l.err(ErrChecksum)
	}
	return nil
}

// verifyRaw checks the size and SHA-256 of a raw file by streaming it.
func (r *Reader) verifyRaw(name string) error {
	f, sum, err := r.openListed(name)
	if err != nil {
		return err
	}
	defer f.Close()
	h, err := newSum(sum.ChecksumAlgo)
	if err != nil {
		return loc{r.dir, name}.err(err)
	}
	// 128 KiB reads run at page cache speed; a larger fresh buffer only
	// adds page faults (1 MiB: 256, ~4 ms on the test VM)
	n, err := io.CopyBuffer(h, io.LimitReader(f, int64(sum.Size)), make([]byte, bufSize(sum.Size, 128<<10)))
	if err != nil {
		return loc{r.dir, name}.err(err)
	}
	return finishSum(loc{r.dir, name}, sum, f, h, n, func() []byte { return h.Sum(nil) })
}

// bufSize is the size of a read buffer for a file of size bytes: no more
// than max, and no more than the file (plus a little, so that the read
// that sees the end is the same call). An image has a dozen small files
// per process, each read twice on restore; a 64 KiB buffer for each of
// them cost ~10 ms of page faults on the test VM for a two-process
// container.
func bufSize(size uint64, max int) int {
	if size+512 < uint64(max) {
		return int(size) + 512
	}
	return max
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// ReadEntries decodes the image file called name (any kind with entries),
// verifying its checksum while reading. A checksum mismatch is reported in
// preference to the decoding error it probably caused.
func (r *Reader) ReadEntries(name string) ([]proto.Message, error) {
	l := loc{r.dir, name}
	k, _, err := kindOf(name)
	if err != nil {
		return nil, l.err(err)
	}
	if k.Raw || k.Layer {
		return nil, l.err(fmt.Errorf("%s files hold raw data, not entries", k.Name))
	}
	f, sum, err := r.openListed(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := newSum(sum.ChecksumAlgo)
	if err != nil {
		return nil, l.err(err)
	}
	br := bufio.NewReaderSize(f, bufSize(sum.Size, 64<<10))
	cr := &countingReader{r: br}
	msgs, derr := decodeFile(io.TeeReader(cr, h), int64(sum.Size), k, l, nil)
	if err := finishSum(l, sum, br, h, cr.n, func() []byte { return h.Sum(nil) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	return msgs, nil
}

func entriesAs[M proto.Message](msgs []proto.Message) []M {
	out := make([]M, len(msgs))
	for i, m := range msgs {
		out[i] = m.(M)
	}
	return out
}

func (r *Reader) readKind(kind, arg string) ([]proto.Message, error) {
	name, err := fileName(kind, arg)
	if err != nil {
		return nil, loc{dir: r.dir}.err(err)
	}
	return r.ReadEntries(name)
}

// Dir returns the image directory.
func (r *Reader) Dir() string { return r.dir }

// Inventory returns a copy of the image's inventory.
func (r *Reader) Inventory() *imagepb.Inventory { return proto.CloneOf(r.inv) }

// Has reports whether the image holds the file called name.
func (r *Reader) Has(name string) bool { return r.sums[name] != nil }

// Pstree returns the entries of pstree.img.
func (r *Reader) Pstree() ([]*imagepb.PstreeEntry, error) {
	msgs, err := r.readKind(kindPstree, "")
	if err != nil {
		return nil, err
	}
	return entriesAs[*imagepb.PstreeEntry](msgs), nil
}

// Core returns the entry of core-<pid>.img.
func (r *Reader) Core(pid int) (*imagepb.TaskCore, error) {
	msgs, err := r.readKind(kindCore, strconv.Itoa(pid))
	if err != nil {
		return nil, err
	}
	return msgs[0].(*imagepb.TaskCore), nil
}

// Mm returns the entry of mm-<pid>.img.
func (r *Reader) Mm(pid int) (*imagepb.MmEntry, error) {
	msgs, err := r.readKind(kindMm, strconv.Itoa(pid))
	if err != nil {
		return nil, err
	}
	return msgs[0].(*imagepb.MmEntry), nil
}

// Files returns the entries of files.img.
func (r *Reader) Files() ([]*imagepb.FileEntry, error) {
	msgs, err := r.readKind(kindFiles, "")
	if err != nil {
		return nil, err
	}
	return entriesAs[*imagepb.FileEntry](msgs), nil
}

// Fdinfo returns the entries of fdinfo-<pid>.img.
func (r *Reader) Fdinfo(pid int) ([]*imagepb.FdEntry, error) {
	msgs, err := r.readKind(kindFdinfo, strconv.Itoa(pid))
	if err != nil {
		return nil, err
	}
	return entriesAs[*imagepb.FdEntry](msgs), nil
}

// Pagemap returns the head and runs of pagemap-<name>.img, validated: the
// head names pages-<name>.img and page size 4096; runs are page-aligned,
// non-empty, do not wrap or overlap, and total the size of the pages file.
// Runs are in file order: run i's pages follow run i-1's in the pages file.
func (r *Reader) Pagemap(name string) (*imagepb.PagemapHead, []*imagepb.PagemapEntry, error) {
	msgs, err := r.readKind(kindPagemap, name)
	if err != nil {
		return nil, nil, err
	}
	mapName, _ := fileName(kindPagemap, name)
	pagesName, _ := fileName(kindPages, name)
	sum := r.sums[pagesName]
	if sum == nil {
		return nil, nil, loc{r.dir, mapName}.err(fmt.Errorf("%w: %s is missing", ErrCorrupt, pagesName))
	}
	return checkPagemap(loc{r.dir, mapName}, name, msgs, int64(sum.Size))
}

// OpenPages opens pages-<name>.img for reading (with ReadAt) after
// validating its pagemap (see Pagemap) and its size. When Open hashed its
// contents they are not re-hashed here: the caller reads them once, and
// the image is private to its owner (mode 0600 in a 0700 directory). When
// Open deferred that (OpenOptions.DeferPages), the caller reads the file in
// order from the start and calls Verify before it trusts what it read. The
// caller closes the file.
func (r *Reader) OpenPages(name string) (*Pages, error) {
	if _, _, err := r.Pagemap(name); err != nil {
		return nil, err
	}
	pagesName, _ := fileName(kindPages, name)
	f, sum, err := r.openPagesFile(pagesName)
	if err != nil {
		return nil, err
	}
	p := &Pages{f: f, l: loc{r.dir, pagesName}, sum: sum}
	if r.deferred[pagesName] {
		if p.h, err = newSum(sum.ChecksumAlgo); err != nil {
			f.Close()
			return nil, p.l.err(err)
		}
	}
	return p, nil
}

// Pages is an open pages file (OpenPages).
type Pages struct {
	f    PagesSource
	l    loc
	sum  *imagepb.FileSum
	h    hash.Hash // the deferred checksum; nil when Open verified the file
	next int64     // with h: the offset the next in-order read starts at
	err  error     // with h: a read out of order
}

// ReadAt reads len(b) bytes at off. With a deferred checksum, reads must
// follow each other from offset 0 (what they read is hashed); a read
// elsewhere makes Verify fail.
func (p *Pages) ReadAt(b []byte, off int64) (int, error) {
	n, err := p.f.ReadAt(b, off)
	if p.h != nil && p.err == nil {
		if off != p.next {
			p.err = p.l.err(fmt.Errorf("read at %d out of order (at %d): the checksum cannot be verified", off, p.next))
		} else {
			p.h.Write(b[:n])
			p.next += int64(n)
		}
	}
	return n, err
}

// Verify checks a deferred checksum: what was read, and the rest of the
// file, against the inventory (an error wrapping ErrChecksum naming the
// file on a mismatch). It does nothing for a file Open verified.
func (p *Pages) Verify() error {
	if p.h == nil {
		return nil
	}
	if p.err != nil {
		return p.err
	}
	size := int64(p.sum.Size)
	rest := io.NewSectionReader(p.f, p.next, max(size-p.next, 0))
	return finishSum(p.l, p.sum, rest, p.h, p.next, func() []byte { return p.h.Sum(nil) })
}

// Rewind starts the reads over from offset 0 (a restore tried again reads
// the pages again): a deferred checksum is computed afresh.
func (p *Pages) Rewind() {
	if p.h != nil {
		p.h.Reset()
	}
	p.next, p.err = 0, nil
}

// Close closes the file.
func (p *Pages) Close() error { return p.f.Close() }

// checksumSizeErr checks that a recorded checksum has its algorithm's size.
func checksumSizeErr(s *imagepb.FileSum) error {
	h, err := newSum(s.ChecksumAlgo)
	if err != nil {
		return err
	}
	if len(s.Checksum) != h.Size() {
		return fmt.Errorf("checksum is %d bytes, want %d", len(s.Checksum), h.Size())
	}
	return nil
}

package image

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// inventoryTemp is where Finish writes the inventory before renaming it to
// inventory.img. It has no .img suffix, so a leftover is never mistaken for
// part of an image.
const inventoryTemp = "inventory.img.tmp"

// Writer writes one image directory. Its methods may be called from several
// goroutines (e.g. one PagesWriter per process); each file is written by one
// call or one PagesWriter.
//
// Use it as
//
//	w, err := image.Create(dir)
//	...
//	defer w.Abort() // no-op once Finish succeeded
//	... w.WriteCore(pid, core) ...
//	return w.Finish(inv)
type Writer struct {
	dir string

	mu         sync.Mutex
	createdDir bool
	lock       *os.File                    // the directory, flocked (lockDir)
	names      map[string]bool             // names reserved or written
	sums       map[string]*imagepb.FileSum // files completely written
	created    []string                    // every path created, for Abort
	open       map[*PagesWriter]struct{}   // pages writers not yet closed
	state      int                         // stateOpen, stateFinished, stateAborted
	pagesSink  func(name string) (io.WriteCloser, error)
}

// SetPagesSink makes CreatePages write each pages file into the stream
// sink returns (a page server's) instead of dir: the inventory still
// lists it with its size and checksum, and a reader finds it where the
// sink put it. Abort does not remove it: the sink's owner does. Abort
// closes a stream that may be being written from another goroutine: its
// Close must be safe then (and fail that write). A stream that
// checksums what it carries (CRC32C) saves the writer its own pass.
func (w *Writer) SetPagesSink(sink func(name string) (io.WriteCloser, error)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pagesSink = sink
}

const (
	stateOpen = iota
	stateFinished
	stateAborted
)

// Create starts writing an image in dir. It creates dir with mode 0700 if
// it does not exist, and refuses a directory that already holds *.img files
// so that images are never mixed.
func Create(dir string) (*Writer, error) {
	w := &Writer{
		dir:   dir,
		names: map[string]bool{},
		sums:  map[string]*imagepb.FileSum{},
		open:  map[*PagesWriter]struct{}{},
	}
	l := loc{dir: dir}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, l.err(err)
		}
		w.createdDir = true
		if err := w.lockDir(); err != nil {
			return nil, err
		}
		return w, nil
	case err != nil:
		return nil, l.err(err)
	case !fi.IsDir():
		return nil, l.err(errors.New("not a directory"))
	}
	if err := w.lockDir(); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, l.err(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".img") || e.Name() == inventoryTemp {
			w.unlockDir()
			return nil, l.err(fmt.Errorf("directory already holds %s; refusing to write an image over another", e.Name()))
		}
	}
	return w, nil
}

// ErrBusy: another writer holds the image directory.
var ErrBusy = errors.New("busy")

// lockDir takes an exclusive flock on the image directory, held until
// Finish or Abort (or the writer's death): two dumps into one directory at
// once would mix their files; the second is refused as busy.
func (w *Writer) lockDir() error {
	f, err := os.Open(w.dir)
	if err != nil {
		return loc{dir: w.dir}.err(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return loc{dir: w.dir}.err(fmt.Errorf("%w: another dump is writing into this directory", ErrBusy))
		}
		// a file system without flock on directories (NFS emulates it
		// with write locks): the files' O_EXCL still keeps two writers
		// from sharing a file
		return nil
	}
	w.lock = f
	return nil
}

// unlockDir releases lockDir's lock.
func (w *Writer) unlockDir() {
	if w.lock != nil {
		w.lock.Close()
		w.lock = nil
	}
}

// Dir returns the image directory.
func (w *Writer) Dir() string { return w.dir }

// reserve claims name for one file; it fails if the writer is finished or
// aborted, or name was already written or reserved.
func (w *Writer) reserve(names ...string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != stateOpen {
		return loc{dir: w.dir}.err(errors.New("writer already finished or aborted"))
	}
	for _, n := range names {
		if w.names[n] {
			return loc{w.dir, n}.err(errors.New("written twice"))
		}
	}
	for _, n := range names {
		w.names[n] = true
	}
	return nil
}

// createFile creates dir/name exclusively with mode 0600 and records it for
// Abort.
func (w *Writer) createFile(name string) (*os.File, error) {
	return w.createFileFlags(name, os.O_WRONLY)
}

// createFileFlags is createFile opening the file with access mode acc
// (os.O_WRONLY, or os.O_RDWR for a file read back while written).
func (w *Writer) createFileFlags(name string, acc int) (*os.File, error) {
	// Hold the lock across the open so that Abort either sees the file in
	// w.created or makes the open fail.
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != stateOpen {
		return nil, loc{w.dir, name}.err(errors.New("writer already finished or aborted"))
	}
	p := filepath.Join(w.dir, name)
	f, err := os.OpenFile(p, acc|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, loc{w.dir, name}.err(err)
	}
	w.created = append(w.created, p)
	return f, nil
}

// writeWhole writes data as dir/name in one go and records its checksum.
func (w *Writer) writeWhole(name string, data []byte) error {
	f, err := w.createFile(name)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && !noWriteback {
		// start its writeback now: Finish's fdatasync waits for less
		unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return loc{w.dir, name}.err(err)
	}
	h := newWriteSum()
	h.Write(data)
	w.record(name, int64(len(data)), h.Sum(nil))
	return nil
}

func (w *Writer) record(name string, size int64, sum []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sums[name] = &imagepb.FileSum{Name: name, Size: uint64(size), Checksum: sum, ChecksumAlgo: writeAlgo}
}

// WriteEntries writes the image file called name (e.g. "core-42.img")
// holding msgs, which must match the file's kind: message types, head entry
// and entry count are checked before anything is written. The file is
// encoded in memory and written with a single write. Raw pages files and
// inventory.img are written by CreatePages and Finish instead.
func (w *Writer) WriteEntries(name string, msgs ...proto.Message) error {
	l := loc{w.dir, name}
	k, _, err := kindOf(name)
	if err != nil {
		return l.err(err)
	}
	if k.Name == kindInventory {
		return l.err(errors.New("inventory.img is written by Finish"))
	}
	data, err := encodeFile(k, msgs)
	if err != nil {
		return l.err(err)
	}
	if err := w.reserve(name); err != nil {
		return err
	}
	return w.writeWhole(name, data)
}

// writeKind writes the file of the named kind for arg.
func (w *Writer) writeKind(kind, arg string, msgs []proto.Message) error {
	name, err := fileName(kind, arg)
	if err != nil {
		return loc{dir: w.dir}.err(err)
	}
	return w.WriteEntries(name, msgs...)
}

func toMessages[M proto.Message](s []M) []proto.Message {
	out := make([]proto.Message, len(s))
	for i, m := range s {
		out[i] = m
	}
	return out
}

// WritePstree writes pstree.img.
func (w *Writer) WritePstree(entries []*imagepb.PstreeEntry) error {
	return w.writeKind(kindPstree, "", toMessages(entries))
}

// WriteCore writes core-<pid>.img. c.Pid must equal pid, as the reader
// checks it.
func (w *Writer) WriteCore(pid int, c *imagepb.TaskCore) error {
	if c != nil && int(c.GetPid()) != pid {
		return loc{dir: w.dir}.err(fmt.Errorf("core of pid %d has pid %d", pid, c.GetPid()))
	}
	return w.writeKind(kindCore, strconv.Itoa(pid), []proto.Message{c})
}

// WriteMm writes mm-<pid>.img.
func (w *Writer) WriteMm(pid int, m *imagepb.MmEntry) error {
	return w.writeKind(kindMm, strconv.Itoa(pid), []proto.Message{m})
}

// WriteFiles writes files.img.
func (w *Writer) WriteFiles(files []*imagepb.FileEntry) error {
	return w.writeKind(kindFiles, "", toMessages(files))
}

// WriteFdinfo writes fdinfo-<pid>.img.
func (w *Writer) WriteFdinfo(pid int, fds []*imagepb.FdEntry) error {
	return w.writeKind(kindFdinfo, strconv.Itoa(pid), toMessages(fds))
}

// Finish completes the image: it sets inv.FormatVersion, fills inv.Files
// with the size and SHA-256 of every file this writer wrote (sorted by
// name), and writes inventory.img last, via a temporary file renamed into
// place, so the image appears complete or not at all. Every PagesWriter
// must be closed and every write must have succeeded: after a failed write
// Finish refuses, and the dump should Abort. After Finish succeeds the
// Writer is done and Abort does nothing.
func (w *Writer) Finish(inv *imagepb.Inventory) error {
	return w.FinishAfter(inv, nil)
}

// FinishAfter is Finish that calls before (when not nil) once the files
// are on disk, before the inventory names them: what must succeed for the
// image to be good (a page server's confirmation of the pages it
// received), waited for as late as it can be. An error from before fails
// Finish; the image is then not written.
func (w *Writer) FinishAfter(inv *imagepb.Inventory, before func() error) error {
	l := loc{w.dir, InventoryName}
	if inv == nil {
		return l.err(errors.New("nil inventory"))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != stateOpen {
		return l.err(errors.New("writer already finished or aborted"))
	}
	if len(w.open) > 0 {
		var names []string
		for p := range w.open {
			names = append(names, p.pagesName)
		}
		sort.Strings(names)
		return l.err(fmt.Errorf("pages writers not closed: %s", strings.Join(names, ", ")))
	}
	// A reserved name without a checksum is a write that failed (or is
	// still running): the image would be incomplete.
	var unfinished []string
	for n := range w.names {
		if w.sums[n] == nil {
			unfinished = append(unfinished, n)
		}
	}
	if len(unfinished) > 0 {
		sort.Strings(unfinished)
		return l.err(fmt.Errorf("files not completely written: %s", strings.Join(unfinished, ", ")))
	}
	inv.FormatVersion = FormatVersion
	inv.Files = make([]*imagepb.FileSum, 0, len(w.sums))
	for _, s := range w.sums {
		inv.Files = append(inv.Files, proto.CloneOf(s))
	}
	slices.SortFunc(inv.Files, func(a, b *imagepb.FileSum) int { return strings.Compare(a.Name, b.Name) })
	data, err := encodeFile(kindByName(kindInventory), []proto.Message{inv})
	if err != nil {
		return l.err(err)
	}
	// Every file is on disk before the inventory names it, and the
	// inventory (and the directory entries) before Finish returns: a dump
	// kills its tree only after Finish, so a crash or power cut then must
	// find the whole image (issue 12, item 7). The inventory is written
	// and synced under its temporary name (never taken for an image)
	// while the files are synced: one journal commit less to wait for.
	tmp := filepath.Join(w.dir, inventoryTemp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return l.err(err)
	}
	files := w.created
	w.created = append(w.created, tmp)
	synced := make(chan error, 1)
	go func() { synced <- syncFiles(files) }()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if serr := <-synced; serr != nil {
		return l.err(fmt.Errorf("sync: %w", serr))
	}
	if err == nil && before != nil {
		err = before()
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(w.dir, InventoryName))
	}
	if err == nil {
		err = syncDir(w.dir, w.createdDir)
	}
	if err != nil {
		return l.err(err)
	}
	w.created[len(w.created)-1] = filepath.Join(w.dir, InventoryName)
	w.state = stateFinished
	w.unlockDir()
	return nil
}

// syncFiles fdatasyncs the files at paths, a few at a time (the journal
// commits of parallel syncs are shared).
func syncFiles(paths []string) error {
	const par = 8
	errs := make([]error, len(paths))
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i, p := range paths {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = syncPath(p, false)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// syncDir fsyncs dir, so that the names of its files (the inventory's
// rename last) are on disk, and its parent too when the dump created dir.
func syncDir(dir string, parent bool) error {
	if err := syncPath(dir, true); err != nil {
		return err
	}
	if parent {
		return syncPath(filepath.Dir(dir), true)
	}
	return nil
}

// syncPath flushes the file (fdatasync: its data and size) or directory
// (fsync) at p to disk.
func syncPath(p string, dir bool) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	if dir {
		err = f.Sync()
	} else {
		err = unix.Fdatasync(int(f.Fd()))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// Abort removes every file this writer created, and the directory if Create
// made it, and closes any open PagesWriter. It does nothing after a
// successful Finish, so it is meant to be deferred. Further writes fail.
func (w *Writer) Abort() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != stateOpen {
		return nil
	}
	w.state = stateAborted
	var errs []error
	// Closing the file makes a concurrent PagesWriter fail; its Close
	// then cannot record anything since the writer is aborted.
	for p := range w.open {
		p.out.Close() // the file is removed below; its close error is moot
	}
	clear(w.open)
	for i := len(w.created) - 1; i >= 0; i-- {
		if err := os.Remove(w.created[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if w.createdDir {
		if err := os.Remove(w.dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	w.unlockDir()
	return errors.Join(errs...)
}

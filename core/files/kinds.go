package files

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// kindDriver is what the engine does with one file kind (imagepb.FileKind),
// gathered in one entry, in the spirit of core/image's table of image
// kinds: how the dump records it, how an image entry of the kind is
// validated before anything is restored, how the restore reopens it, and
// how `ctr-cr show` describes it. Each kind registers its driver
// (registerKind, from an init function) in the file that holds the kind's
// code, so that a new kind is one file plus its enum value.
//
// What stays outside the drivers, on purpose: the choice, at dump, of the
// kind of an fd that is neither an anon inode nor a socket (by its file
// type, in an order that matters: Table.regularFile, charDevice,
// pipeOrFifo), the checks that span the whole image (pty pairs, consoles, external pipes
// and sockets: Opener.Check) and the phases of a dump that look at all the
// entries of one kind at once (DumpPtys, ResolveEpoll, CheckSockets, ...).
type kindDriver struct {
	kind imagepb.FileKind
	// anonInode is the NAME of the "anon_inode:[NAME]" link that makes
	// an fd this kind at dump.
	anonInode string
	// sockFamilies are the socket families (SO_DOMAIN) that make a
	// socket this kind at dump.
	sockFamilies []int
	// dump records a newly seen open file description of the kind, found
	// by anonInode or sockFamilies (the other kinds are found by file
	// type, see Table.recordFile): it fills f (Kind included) and adds it
	// to t, returning its id, or refuses it naming the fd.
	dump func(t *Table, f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error)
	// check validates an entry of the kind that is not a deleted file
	// (Opener.Check checks those), before anything is restored: what
	// the entry refers to still exists, and hostile values get an
	// error, never a panic. Nil: nothing to check before opening.
	check func(o *Opener, f *imagepb.FileEntry) error
	// open reopens the entry in the restorer and returns our fd of it.
	// Nil for a kind that is never an fd of its own (FILE_SHMEM: mapped
	// only, see Opener.OpenForMap).
	open func(o *Opener, f *imagepb.FileEntry) (int, error)
	// describe names the key facts of an entry for `ctr-cr show`, as
	// text that starts with a space, or "". Nil: nothing beyond the
	// path, flags and offset show prints for every file.
	describe func(f *imagepb.FileEntry) string
}

// fdBeingDumped is an fd of a dumped process that DumpFds hands to a
// kind's dump function.
type fdBeingDumped struct {
	pid, fd int
	cp      int // our copy of the fd (pidfd_getfd)
	link    string
	fi      *procfs.FdInfo
	st      *unix.Stat_t
	opts    Options
}

var (
	kindDrivers = map[imagepb.FileKind]*kindDriver{}
	anonDrivers = map[string]*kindDriver{} // by anonInode
	sockDrivers = map[int]*kindDriver{}    // by socket family
)

// registerKind adds the driver of one kind. A kind, anon inode name or
// socket family registered twice, or a dump with nothing to find its fds
// by, is a programming error: it panics at start-up (and in every test of
// the package).
func registerKind(d *kindDriver) {
	if _, dup := kindDrivers[d.kind]; dup || d.kind == imagepb.FileKind_FILE_UNKNOWN {
		panic(fmt.Sprintf("files: file kind %v registered twice or unknown", d.kind))
	}
	kindDrivers[d.kind] = d
	if (d.anonInode != "" || len(d.sockFamilies) > 0) != (d.dump != nil) {
		panic(fmt.Sprintf("files: file kind %v: a dump without an anon inode or socket family to find it by, or the reverse", d.kind))
	}
	if d.anonInode != "" {
		if _, dup := anonDrivers[d.anonInode]; dup {
			panic(fmt.Sprintf("files: anon inode %q registered twice", d.anonInode))
		}
		anonDrivers[d.anonInode] = d
	}
	for _, fam := range d.sockFamilies {
		if _, dup := sockDrivers[fam]; dup {
			panic(fmt.Sprintf("files: socket family %d registered twice", fam))
		}
		sockDrivers[fam] = d
	}
}

// dumpAnon records an anon inode fd (link "anon_inode:[NAME]") through the
// driver of its NAME; other anon inodes are refused, naming the fd.
func (t *Table) dumpAnon(f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
	name := strings.Trim(strings.TrimPrefix(d.link, "anon_inode:"), "[]")
	if drv := anonDrivers[name]; drv != nil {
		return drv.dump(t, f, d)
	}
	return 0, &UnsupportedError{Fd: d.fd, Link: d.link, Kind: name}
}

// dumpSocket records a socket through the driver of its family
// (SO_DOMAIN); other families are refused, naming the fd.
func (t *Table) dumpSocket(f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
	domain, err := unix.GetsockoptInt(d.cp, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return 0, fmt.Errorf("fd %d (%s): SO_DOMAIN: %w", d.fd, d.link, err)
	}
	if drv := sockDrivers[domain]; drv != nil {
		return drv.dump(t, f, d)
	}
	return 0, &UnsupportedError{Fd: d.fd, Link: d.link, Kind: fmt.Sprintf("socket of family %d", domain)}
}

// openAlone is a kind's open function that needs nothing of the opener.
func openAlone(open func(*imagepb.FileEntry) (int, error)) func(*Opener, *imagepb.FileEntry) (int, error) {
	return func(_ *Opener, f *imagepb.FileEntry) (int, error) { return open(f) }
}

// checkAlone is a kind's check that needs nothing of the opener.
func checkAlone(check func(*imagepb.FileEntry) error) func(*Opener, *imagepb.FileEntry) error {
	return func(_ *Opener, f *imagepb.FileEntry) error { return check(f) }
}

// unsupportedKind is the error for an entry whose kind this ctr-cr cannot
// restore: a kind it does not know (an image of a newer ctr-cr, or a
// hostile one), or one that is never an fd of its own.
func unsupportedKind(k imagepb.FileKind) error {
	return fmt.Errorf("unsupported file kind %v", k)
}

// driverOf returns the driver of kind k; the one place where a kind
// unknown to this ctr-cr is refused.
func driverOf(k imagepb.FileKind) (*kindDriver, error) {
	if d, ok := kindDrivers[k]; ok {
		return d, nil
	}
	return nil, unsupportedKind(k)
}

// checkEntry validates one entry of an image before anything is restored:
// its kind is known, a deleted file can be recreated (checkDeleted), any
// other entry passes its kind's check.
func (o *Opener) checkEntry(f *imagepb.FileEntry) error {
	d, err := driverOf(f.Kind)
	if err != nil {
		return fmt.Errorf("file %d (%s): %w", f.Id, f.Path, err)
	}
	switch {
	case f.Deleted:
		return o.checkDeleted(f)
	case d.check != nil:
		return d.check(o, f)
	}
	return nil
}

// openEntry reopens one entry through its kind's driver.
func (o *Opener) openEntry(f *imagepb.FileEntry) (int, error) {
	d, err := driverOf(f.Kind)
	if err != nil {
		return -1, err
	}
	if d.open == nil {
		return -1, unsupportedKind(f.Kind)
	}
	return d.open(o, f)
}

// Describe names the key facts of a file entry for `ctr-cr show`
// (counters, targets, queued bytes, watches, peers, sessions...) as text
// that starts with a space, through its kind's driver; "" for a kind with
// nothing to add or unknown to this ctr-cr.
func Describe(f *imagepb.FileEntry) string {
	if d := kindDrivers[f.Kind]; d != nil && d.describe != nil {
		return d.describe(f)
	}
	return ""
}

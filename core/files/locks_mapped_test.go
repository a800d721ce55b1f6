package files

import (
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// mappedTable is a table with entry 1 (a regular file or memfd) mapped by
// the VMAs given as (pid, shared, mw) on inode fe:00:4000000001.
func mappedTable(kind imagepb.FileKind, vmas ...mapUse) *Table {
	t := &Table{Files: []*imagepb.FileEntry{{Id: 1, Kind: kind}}}
	for i, u := range vmas {
		v := &procfs.SmapsEntry{VMA: procfs.VMA{Start: uint64(i+1) << 20, End: uint64(i+1)<<20 + 4096, Shared: u.shared, DevMajor: 0xfe, Inode: 4000000001}}
		if u.mayWrite {
			v.VmFlags = []string{"rd", "wr", "sh", "mr", "mw"}
		}
		t.NoteMapping(u.pid, v, 1)
	}
	return t
}

// TestLockOnMapping: a flock or OFD lock no fd shows goes to the only
// mapping of its inode; the cases whose holder cannot be told or taken
// again exactly are refused by name; a lock on an unmapped inode is not
// the mapping's (and an OFD lock there not the dump's).
func TestLockOnMapping(t *testing.T) {
	const flockLine = "1: FLOCK  ADVISORY  WRITE 100 fe:00:4000000001 0 EOF"
	const ofdLine = "1: OFDLCK ADVISORY  WRITE -1 fe:00:4000000001 0 99"
	inDump := func(pid int) bool { return pid == 100 || pid == 200 }
	opts := Options{FileLocks: true}
	rw := mapUse{pid: 100, shared: true, mayWrite: true}
	for _, c := range []struct {
		name, line string
		kind       imagepb.FileKind
		vmas       []mapUse
		inFlight   bool
		opts       Options
		want       string // error text; "" for success
		recorded   bool
	}{
		{"flock, one rw mapping", flockLine, imagepb.FileKind_FILE_REG, []mapUse{rw}, false, opts, "", true},
		{"OFD, one rw mapping", ofdLine, imagepb.FileKind_FILE_REG, []mapUse{rw}, false, opts, "", true},
		{"flock, private mapping", flockLine, imagepb.FileKind_FILE_REG, []mapUse{{pid: 100}}, false, opts, "", true},
		{"OFD write, private mapping", ofdLine, imagepb.FileKind_FILE_REG, []mapUse{{pid: 100}}, false, opts, "read-only file", false},
		{"mapped twice", flockLine, imagepb.FileKind_FILE_REG, []mapUse{rw, rw}, false, opts, "mapped 2 times", false},
		{"mapped by another pid", flockLine, imagepb.FileKind_FILE_REG, []mapUse{{pid: 200, shared: true, mayWrite: true}}, false, opts, "another process than the one mapping", false},
		{"also in flight", flockLine, imagepb.FileKind_FILE_REG, []mapUse{rw}, true, opts, "in flight", false},
		{"memfd", flockLine, imagepb.FileKind_FILE_MEMFD, []mapUse{rw}, false, opts, "memory object", false},
		{"not mapped", flockLine, imagepb.FileKind_FILE_REG, nil, false, opts, "held through no fd", false},
		{"OFD, not mapped: not the dump's", ofdLine, imagepb.FileKind_FILE_REG, nil, false, opts, "", false},
		{"without --file-locks", flockLine, imagepb.FileKind_FILE_REG, []mapUse{rw}, false, Options{}, "without --file-locks", false},
		{"OFD without --file-locks", ofdLine, imagepb.FileKind_FILE_REG, []mapUse{rw}, false, Options{}, "without --file-locks", false},
	} {
		tb := mappedTable(c.kind, c.vmas...)
		if c.inFlight {
			tb.noteInFlight(4000000001)
		}
		l, _, err := parseLockLine(c.line)
		if err != nil {
			t.Fatal(err)
		}
		err = tb.checkUnrecorded(&l, inDump, c.opts)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.want)
		}
		if got := len(tb.Files[0].MapLocks) == 1; got != c.recorded {
			t.Errorf("%s: recorded on the mapping's entry: %v, want %v", c.name, got, c.recorded)
		}
	}
}

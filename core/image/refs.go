package image

import (
	"fmt"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// refIndex collects, while Open decodes each file, what is needed to check
// the references between files once all are read. It keeps summaries, not
// whole files, except for pagemaps.
//
// Checks (extend here when adding kinds that refer to others):
//   - pstree.img: pids > 0 and unique; each ppid is 0 or a pid of the tree;
//     the inventory's root_pid, if set, is in the tree with ppid 0.
//   - core-<pid>.img, mm-<pid>.img, fdinfo-<pid>.img: <pid> is in
//     pstree.img; TaskCore.pid == <pid>.
//   - files.img: ids are non-zero (0 means "no file") and unique.
//   - fdinfo-<pid>.img: fds >= 0 and unique; file_id is an id of files.img.
//   - mm-<pid>.img: vmas page-aligned, non-empty, ascending and not
//     overlapping; exe_file_id and vma file_id, when non-zero, are ids of
//     files.img.
//   - pagemap-<name>.img: see Reader.Pagemap.
//   - files.img pty entries: see checkPtys; the session a pty master names
//     is a pid of pstree.img.
type refIndex struct {
	inv      *imagepb.Inventory
	pstree   bool
	pids     map[int32]int32 // pid -> ppid
	order    []int32         // pids in pstree.img order
	pidFiles []pidRef
	files    bool
	fileIDs  map[uint32]bool
	fileRefs []fileRef
	pagemaps []pagemapRef
	ptySids  []ptySid
}

type pidRef struct {
	file string
	pid  int32
}

type fileRef struct {
	l     loc
	entry int
	what  string
	id    uint32
}

type pagemapRef struct {
	l    loc
	name string
	msgs []proto.Message
}

func newRefIndex(inv *imagepb.Inventory) *refIndex {
	return &refIndex{inv: inv, pids: map[int32]int32{}, fileIDs: map[uint32]bool{}}
}

// add records the decoded entries of one file, checking what can be checked
// within the file.
func (x *refIndex) add(l loc, k *Kind, arg string, msgs []proto.Message) error {
	pid := func() int32 {
		n, _ := strconv.ParseInt(arg, 10, 32) // valid: the name matched <pid>
		return int32(n)
	}
	switch k.Name {
	case kindPstree:
		x.pstree = true
		for i, e := range entriesAs[*imagepb.PstreeEntry](msgs) {
			switch {
			case e.Pid <= 0:
				return l.corrupt(i, -1, "pid %d is not positive", e.Pid)
			case e.Ppid < 0:
				return l.corrupt(i, -1, "ppid %d is negative", e.Ppid)
			}
			if _, dup := x.pids[e.Pid]; dup {
				return l.corrupt(i, -1, "pid %d listed twice", e.Pid)
			}
			x.pids[e.Pid] = e.Ppid
			x.order = append(x.order, e.Pid)
		}
	case kindCore:
		x.pidFiles = append(x.pidFiles, pidRef{l.file, pid()})
		if c := msgs[0].(*imagepb.TaskCore); c.Pid != pid() {
			return l.corrupt(0, -1, "pid %d in the core of pid %d", c.Pid, pid())
		}
	case kindMm:
		x.pidFiles = append(x.pidFiles, pidRef{l.file, pid()})
		mm := msgs[0].(*imagepb.MmEntry)
		if mm.ExeFileId != 0 {
			x.fileRefs = append(x.fileRefs, fileRef{l, 0, "exe_file_id", mm.ExeFileId})
		}
		var prevEnd uint64
		for i, v := range mm.Vmas {
			switch {
			case v.Start%PageSize != 0 || v.End%PageSize != 0 || v.Start >= v.End:
				return l.corrupt(0, -1, "vma %d [%#x, %#x) is empty or not page-aligned", i, v.Start, v.End)
			case v.Start < prevEnd:
				return l.corrupt(0, -1, "vma %d [%#x, %#x) is out of order or overlaps the one before", i, v.Start, v.End)
			}
			prevEnd = v.End
			if v.FileId != 0 {
				x.fileRefs = append(x.fileRefs, fileRef{l, 0, fmt.Sprintf("vma %d file_id", i), v.FileId})
			}
		}
	case kindFiles:
		x.files = true
		for i, f := range entriesAs[*imagepb.FileEntry](msgs) {
			switch {
			case f.Id == 0:
				return l.corrupt(i, -1, "file id 0 is reserved for \"no file\"")
			case x.fileIDs[f.Id]:
				return l.corrupt(i, -1, "file id %d listed twice", f.Id)
			}
			x.fileIDs[f.Id] = true
		}
		sids, err := checkPtys(l, entriesAs[*imagepb.FileEntry](msgs))
		if err != nil {
			return err
		}
		x.ptySids = append(x.ptySids, sids...)
	case kindFdinfo:
		x.pidFiles = append(x.pidFiles, pidRef{l.file, pid()})
		fds := map[int32]bool{}
		for i, fd := range entriesAs[*imagepb.FdEntry](msgs) {
			switch {
			case fd.Fd < 0:
				return l.corrupt(i, -1, "fd %d is negative", fd.Fd)
			case fds[fd.Fd]:
				return l.corrupt(i, -1, "fd %d listed twice", fd.Fd)
			}
			fds[fd.Fd] = true
			x.fileRefs = append(x.fileRefs, fileRef{l, i, fmt.Sprintf("fd %d file_id", fd.Fd), fd.FileId})
		}
	case kindParentmap:
		x.pidFiles = append(x.pidFiles, pidRef{l.file, pid()})
		if err := checkParentmapRef(l, x.inv); err != nil {
			return err
		}
		if err := checkRuns(entriesAs[*imagepb.PagemapEntry](msgs)); err != nil {
			return l.err(err)
		}
	case kindPagemap:
		x.pagemaps = append(x.pagemaps, pagemapRef{l, arg, msgs})
	}
	return nil
}

// check runs the checks that need every file.
func (x *refIndex) check(r *Reader) error {
	if x.pstree {
		l := loc{r.dir, "pstree.img"}
		for _, pid := range x.order {
			ppid := x.pids[pid]
			if _, ok := x.pids[ppid]; ppid != 0 && !ok {
				return l.corrupt(-1, -1, "ppid %d of pid %d is not in the tree", ppid, pid)
			}
		}
		if root := x.inv.GetRootPid(); root != 0 {
			ppid, ok := x.pids[root]
			switch {
			case !ok:
				return l.corrupt(-1, -1, "root pid %d of inventory.img is not in the tree", root)
			case ppid != 0:
				return l.corrupt(-1, -1, "root pid %d has ppid %d, want 0", root, ppid)
			}
		}
	}
	for _, s := range x.ptySids {
		if _, ok := x.pids[s.sid]; !ok && x.pstree {
			return s.l.corrupt(s.entry, -1, "pty session %d is not a pid of pstree.img", s.sid)
		}
	}
	for _, p := range x.pidFiles {
		if _, ok := x.pids[p.pid]; !ok {
			why := "pstree.img"
			if !x.pstree {
				why = "pstree.img, which is missing"
			}
			return loc{r.dir, p.file}.corrupt(-1, -1, "pid %d is not in %s", p.pid, why)
		}
	}
	for _, f := range x.fileRefs {
		if !x.fileIDs[f.id] {
			why := "files.img"
			if !x.files {
				why = "files.img, which is missing"
			}
			return f.l.corrupt(f.entry, -1, "%s %d is not an id of %s", f.what, f.id, why)
		}
	}
	for _, p := range x.pagemaps {
		pagesName, _ := fileName(kindPages, p.name)
		sum := r.sums[pagesName] // present: checkFileList pairs them
		if _, _, err := checkPagemap(p.l, p.name, p.msgs, int64(sum.GetSize())); err != nil {
			return err
		}
	}
	return nil
}

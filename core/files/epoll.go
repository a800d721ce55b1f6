package files

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Epoll sets (FILE_EPOLL): their registrations in epoll_targets, each
// target's file found among the files of the dump by ResolveEpoll. The
// restore makes an empty set; core/restore registers the targets once
// every fd of the task is in place.
func init() {
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_EPOLL, anonInode: "eventpoll",
		dump:     (*Table).epoll,
		open:     func(*Opener, *imagepb.FileEntry) (int, error) { return unix.EpollCreate1(unix.EPOLL_CLOEXEC) },
		describe: describeEpoll})
}

// describeEpoll lists an epoll set's registrations.
func describeEpoll(f *imagepb.FileEntry) string {
	var ts []string
	for _, t := range f.EpollTargets {
		ts = append(ts, fmt.Sprintf("fd %d events %#x data %#x", t.Tfd, t.Events, t.Data))
	}
	return fmt.Sprintf(" %d target(s) [%s]", len(f.EpollTargets), strings.Join(ts, ", "))
}

// epoll records the targets of an epoll set from its fdinfo "tfd:" lines;
// ResolveEpoll later finds each target's file.
func (t *Table) epoll(f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
	pid, fd, fi := d.pid, d.fd, d.fi
	f.Kind = imagepb.FileKind_FILE_EPOLL
	id := t.add("", f)
	ref := epollRef{pid: pid, fd: fd, f: f}
	for _, l := range strings.Split(fi.Raw, "\n") {
		if !strings.HasPrefix(l, "tfd:") {
			continue
		}
		// "tfd: 5 events: 19 data: 4  pos:0 ino:e13f5 sdev:f": a value
		// follows its key after spaces or right after the colon
		fs := strings.Fields(l)
		var kv []string
		for _, f := range fs {
			k, v, _ := strings.Cut(f, ":")
			if k != f {
				kv = append(kv, k+":", v)
			} else if len(kv) > 0 && kv[len(kv)-1] == "" {
				kv[len(kv)-1] = f
			}
		}
		var tg imagepb.EpollTarget
		var key [2]uint64
		for i := 0; i+1 < len(kv); i += 2 {
			v := kv[i+1]
			switch kv[i] {
			case "tfd:":
				n, _ := strconv.ParseInt(v, 10, 32)
				tg.Tfd = int32(n)
			case "events:":
				n, _ := strconv.ParseUint(v, 16, 32)
				tg.Events = uint32(n)
			case "data:":
				n, _ := strconv.ParseUint(v, 16, 64)
				tg.Data = n
			case "ino:":
				key[1], _ = strconv.ParseUint(v, 16, 64)
			case "sdev:":
				// the kernel's dev_t (major << 20 | minor)
				n, _ := strconv.ParseUint(v, 16, 64)
				key[0] = unix.Mkdev(uint32(n>>20), uint32(n&0xfffff))
			}
		}
		f.EpollTargets = append(f.EpollTargets, &tg)
		ref.keys = append(ref.keys, key)
	}
	t.epolls = append(t.epolls, ref)
	return id, nil
}

// epollRef is an epoll set to resolve: its owner's fd and its targets'
// (st_dev, st_ino), parallel to f.EpollTargets in fdinfo order.
type epollRef struct {
	pid, fd int
	f       *imagepb.FileEntry
	keys    [][2]uint64
}

// kcmpEpollSlot is struct kcmp_epoll_slot.
type kcmpEpollSlot struct {
	Efd, Tfd uint32
	Toff     uint64
}

const kcmpEpollTfd = 7 // KCMP_EPOLL_TFD

// ResolveEpoll finds the file of every epoll target among the files of the
// dump (kcmp KCMP_EPOLL_TFD), so that a target whose fd was closed or
// reused after registration comes back registered with its own file. A
// target whose file no task of the dump holds is refused. Call it after
// every process's fds are dumped, while the tasks are frozen.
func (t *Table) ResolveEpoll() error {
	for _, ref := range t.epolls {
		toff := map[int32]uint64{} // registrations seen per fd number
		for i, tg := range ref.f.EpollTargets {
			slot := kcmpEpollSlot{Efd: uint32(ref.fd), Tfd: uint32(tg.Tfd), Toff: toff[tg.Tfd]}
			toff[tg.Tfd]++
			var kerr error
			for _, s := range t.seen[ref.keys[i]] {
				r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(s.pid), uintptr(ref.pid), kcmpEpollTfd, uintptr(s.fd), uintptr(unsafe.Pointer(&slot)), 0)
				if e != 0 {
					kerr = e
				}
				if e == 0 && r == 0 {
					tg.FileId = s.id
					break
				}
			}
			if tg.FileId == 0 {
				if kerr != nil {
					return fmt.Errorf("pid %d: fd %d (epoll): kcmp KCMP_EPOLL_TFD target fd %d: %w", ref.pid, ref.fd, tg.Tfd, kerr)
				}
				return &UnsupportedError{Pid: ref.pid, Fd: ref.fd, Link: "anon_inode:[eventpoll]",
					Kind: fmt.Sprintf("epoll set whose target fd %d is a file no process of the dump holds", tg.Tfd)}
			}
		}
		ts := ref.f.EpollTargets
		sort.SliceStable(ts, func(i, j int) bool {
			if ts[i].Tfd != ts[j].Tfd {
				return ts[i].Tfd < ts[j].Tfd
			}
			return ts[i].Data < ts[j].Data
		})
	}
	t.epolls = nil
	return nil
}

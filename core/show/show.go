// Package show prints a human-readable summary of an image directory: the
// processes, their threads, memory map with sizes and kinds, open files, and
// how many bytes of pages the image holds.
package show

import (
	"fmt"
	"io"
	"strings"

	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Summary validates the image in dir and writes its summary to w.
func Summary(dir string, w io.Writer) error {
	img, err := image.Open(dir)
	if err != nil {
		return err
	}
	inv := img.Inventory()
	fmt.Fprintf(w, "image %s: format v%d, ctr-cr %s, kernel %s, %s, xsave features %#x (%d bytes)\n",
		dir, inv.FormatVersion, inv.ToolVersion, inv.Kernel, inv.Arch, inv.XsaveFeatures, inv.XsaveSize)
	if done, err := chainSummary(img, w); done || err != nil {
		return err
	}
	tree, err := img.Pstree()
	if err != nil {
		return err
	}
	fl, err := img.Files()
	if err != nil {
		return err
	}
	ctty := cttys(fl)
	byID := map[uint32]*imagepb.FileEntry{}
	for _, f := range fl {
		byID[f.Id] = f
	}
	fmt.Fprintf(w, "\n%7s %7s %7s %7s %-4s %s\n", "PID", "PPID", "PGID", "SID", "STAT", "COMMAND")
	depth := map[int32]int{}
	for _, p := range tree {
		depth[p.Pid] = depth[p.Ppid] + 1
		if p.Ppid == 0 {
			depth[p.Pid] = 0
		}
		comm, stat := "", "R"
		if p.Zombie {
			stat, comm = "Z", fmt.Sprintf("<defunct, wait status %#x>", p.ExitStatus)
		} else if c, err := img.Core(int(p.Pid)); err == nil {
			comm = c.Comm
			if p.Stopped {
				stat = "T"
			}
		}
		indent := ""
		if d := depth[p.Pid]; d > 0 {
			indent = strings.Repeat("    ", d-1) + " \\_ "
		}
		fmt.Fprintf(w, "%7d %7d %7d %7d %-4s %s%s\n", p.Pid, p.Ppid, p.Pgid, p.Sid, stat, indent, comm)
	}
	for _, p := range tree {
		if p.Zombie {
			continue
		}
		pid := int(p.Pid)
		core, err := img.Core(pid)
		if err != nil {
			return err
		}
		mm, err := img.Mm(pid)
		if err != nil {
			return err
		}
		fds, err := img.Fdinfo(pid)
		if err != nil {
			return err
		}
		_, pm, err := img.Pagemap(fmt.Sprint(pid))
		if err != nil {
			return err
		}
		var pages uint64
		for _, e := range pm {
			pages += e.NrPages
		}
		tty := ""
		if idx, ok := ctty[p.Sid]; ok {
			tty = fmt.Sprintf(", controlling terminal /dev/pts/%d", idx)
		}
		fmt.Fprintf(w, "\nprocess %d (%s): ppid %d, pgid %d, sid %d%s, %d thread(s), %d page(s) = %s in the image\n",
			pid, core.Comm, p.Ppid, p.Pgid, p.Sid, tty, len(core.Threads), pages, bytes(pages*4096))
		for _, t := range core.Threads {
			fmt.Fprintf(w, "  thread %d (%s): sigmask %#x, %d pending signal(s)\n", t.Tid, t.Comm, t.Sigmask, len(t.Pending))
		}
		fmt.Fprintf(w, "  %d signal handler(s), %d itimer(s), %d POSIX timer(s), %d shared pending signal(s), cwd %s\n",
			len(core.Sigactions), len(core.Itimers), len(core.PosixTimers), len(core.SharedPending), core.Cwd)
		fmt.Fprintf(w, "  memory: %d VMA(s)\n", len(mm.Vmas))
		if err := showCow(w, img, pid, mm); err != nil {
			return err
		}
		for _, v := range mm.Vmas {
			fmt.Fprintf(w, "    %012x-%012x %9s %s %-12s %s%s\n", v.Start, v.End, bytes(v.End-v.Start), prot(v), kind(v.Kind), v.Name, mapLocksExtra(byID[v.FileId]))
		}
		fmt.Fprintf(w, "  files: %d fd(s)\n", len(fds))
		for _, fd := range fds {
			f := byID[fd.FileId]
			if f == nil {
				continue
			}
			extra := ""
			if fd.Cloexec {
				extra += " cloexec"
			}
			if f.Deleted {
				extra += fmt.Sprintf(" deleted (%d bytes saved)", len(f.GhostData))
			}
			extra += files.Describe(f)
			extra += locksExtra(f, fd)
			fmt.Fprintf(w, "    %3d %-8s %s flags %#o pos %d%s\n", fd.Fd, kindName(f.Kind), f.Path, f.Flags, f.Pos, extra)
		}
	}
	return nil
}

func prot(v *imagepb.Vma) string {
	b := []byte("---p")
	if v.Prot&1 != 0 {
		b[0] = 'r'
	}
	if v.Prot&2 != 0 {
		b[1] = 'w'
	}
	if v.Prot&4 != 0 {
		b[2] = 'x'
	}
	if v.Shared {
		b[3] = 's'
	}
	return string(b)
}

func kind(k imagepb.VmaKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "VMA_"))
}

func kindName(k imagepb.FileKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "FILE_"))
}

func bytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%dK", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

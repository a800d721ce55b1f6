package kernel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mapping is one line of /proc/PID/maps.
type mapping struct {
	start, end uint64
	perms      string
}

// childMaps parses /proc/PID/maps.
func childMaps(pid int) ([]mapping, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, mapping{s, e, f[1]})
	}
	if len(out) == 0 {
		return nil, errors.New("no mappings")
	}
	return out, nil
}

// probeVMReadv reads the ELF header at the child's first readable mapping.
func probeVMReadv(p *prober, pid int, maps []mapping) {
	for _, m := range maps {
		if m.perms[0] != 'r' {
			continue
		}
		b := make([]byte, 16)
		n, err := unix.ProcessVMReadv(pid, []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}},
			[]unix.RemoteIovec{{Base: uintptr(m.start), Len: len(b)}}, 0)
		if err != nil {
			p.set(fVMReadv, false, "process_vm_readv at %#x: %s", m.start, errno(err))
			return
		}
		what := "data"
		if bytes.HasPrefix(b, []byte("\x7fELF")) {
			what = "ELF header"
		}
		p.set(fVMReadv, true, "read %d bytes at %#x (%s)", n, m.start, what)
		return
	}
	p.set(fVMReadv, false, "child has no readable mapping")
}

// probeMemWrite rewrites, through /proc/PID/mem, the first bytes of the
// child's first non-writable executable mapping with their own value: only
// FOLL_FORCE lets that write through.
func probeMemWrite(p *prober, pid int, maps []mapping) {
	var target *mapping
	for i := range maps {
		if maps[i].perms[1] == '-' && maps[i].perms[2] == 'x' {
			target = &maps[i]
			break
		}
	}
	if target == nil {
		p.set(fMemWrite, false, "child has no read-only executable mapping")
		return
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err != nil {
		p.set(fMemWrite, false, "open /proc/%d/mem: %s", pid, errno(err))
		return
	}
	defer f.Close()
	b := make([]byte, 8)
	if _, err := unix.Pread(int(f.Fd()), b, int64(target.start)); err != nil {
		p.set(fMemWrite, false, "read %s mapping at %#x: %s", target.perms, target.start, errno(err))
		return
	}
	n, err := unix.Pwrite(int(f.Fd()), b, int64(target.start))
	if err != nil {
		p.set(fMemWrite, false, "write %s mapping at %#x: %s (FOLL_FORCE refused? see proc_mem.force_override)", target.perms, target.start, errno(err))
		return
	}
	p.set(fMemWrite, true, "FOLL_FORCE write of %d bytes into %s mapping at %#x", n, target.perms, target.start)
}

// probePidfd steals the child's fd 0 with pidfd_getfd and checks with
// kcmp(KCMP_FILE) that it is the child's open file; without a stolen fd,
// kcmp compares one of our fds with its dup.
func probePidfd(p *prober, pid int) {
	stolen := -1
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		p.set(fPidfdGetfd, false, "pidfd_open: %s", errno(err))
	} else {
		stolen, err = unix.PidfdGetfd(pidfd, 0, 0)
		unix.Close(pidfd)
		if err != nil {
			p.set(fPidfdGetfd, false, "pidfd_getfd of child fd 0: %s", errno(err))
			stolen = -1
		} else {
			defer unix.Close(stolen)
			p.set(fPidfdGetfd, true, "pidfd_open + pidfd_getfd of child fd 0")
		}
	}
	self := os.Getpid()
	if stolen >= 0 {
		r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(self), uintptr(pid), kcmpFile, uintptr(stolen), 0, 0)
		if e != 0 {
			p.set(fKcmp, false, "kcmp(KCMP_FILE) against child: %s", errno(e))
		} else if r != 0 {
			p.set(fKcmp, false, "kcmp(KCMP_FILE) says a pidfd_getfd copy differs from its source (%d)", r)
		} else {
			p.set(fKcmp, true, "stolen fd and child fd 0 compare equal")
		}
		return
	}
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		p.set(fKcmp, false, "open /dev/null: %s", errno(err))
		return
	}
	defer unix.Close(fd)
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		p.set(fKcmp, false, "dup: %s", errno(err))
		return
	}
	defer unix.Close(dup)
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(self), uintptr(self), kcmpFile, uintptr(fd), uintptr(dup), 0)
	switch {
	case e != 0:
		p.set(fKcmp, false, "kcmp(KCMP_FILE): %s", errno(e))
	case r != 0:
		p.set(fKcmp, false, "kcmp(KCMP_FILE) says an fd and its dup differ (%d)", r)
	default:
		p.set(fKcmp, true, "fd and its dup compare equal")
	}
}

package dump

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// The tracking holder. The write-protect registration that tracks the
// pages a process writes between pre-copy rounds lives as long as its
// userfaultfd, and that must not live in the process itself: an fd of its
// own would show in /proc/self/fd, take an fd number it may want, be
// closed by its close_range and go with it through exec and fork. So the
// userfaultfds (created in each process by an injected userfaultfd(2),
// taken out with pidfd_getfd and closed in it again while it is frozen)
// are held by a small ctr-cr process of their own, started by the
// pre-dump round and named in its image (Inventory.premig_tracker). The
// next round takes them from it with pidfd_getfd; the final dump ends it.
// The holder ends by itself once every tracked process is gone.

// HolderArg is the hidden command that makes ctr-cr a tracking holder.
const HolderArg = "__premig-holder"

// tracked is the userfaultfd of one process, held by this ctr-cr.
type tracked struct {
	pid   int
	start uint64 // the process's start time
	fd    int
}

// startHolder starts a holder process for the userfaultfds of ts (its fds
// 3, 4, ...) and returns its record for the image.
func startHolder(ts []*tracked) (*imagepb.PremigTracker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("tracking holder: %w", err)
	}
	args := []string{HolderArg}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, t := range ts {
		args = append(args, strconv.Itoa(t.pid))
		// a copy: an *os.File closes its fd when collected, and ours
		// is closed by whoever holds t
		d, err := unix.FcntlInt(uintptr(t.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("tracking holder: %w", err)
		}
		files = append(files, os.NewFile(uintptr(d), "userfaultfd"))
	}
	cmd := exec.Command(exe, args...)
	cmd.Dir = "/"
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("tracking holder: start: %w", err)
	}
	hpid := cmd.Process.Pid
	cmd.Process.Release() // it outlives us: reaped by whoever adopts it
	st, err := procfs.ReadStat(hpid)
	if err != nil {
		unix.Kill(hpid, unix.SIGKILL)
		return nil, fmt.Errorf("tracking holder pid %d: %w", hpid, err)
	}
	rec := &imagepb.PremigTracker{HolderPid: int32(hpid), HolderStartTime: st.StartTime}
	for i, t := range ts {
		rec.Tracks = append(rec.Tracks, &imagepb.PremigTrack{Pid: int32(t.pid), StartTime: t.start, HolderFd: int32(3 + i)})
	}
	return rec, nil
}

// holderPidfd checks that rec's holder still runs (same pid, start time
// and command) and returns a pidfd of it.
func holderPidfd(rec *imagepb.PremigTracker) (int, error) {
	pid := int(rec.GetHolderPid())
	if pid <= 0 {
		return -1, fmt.Errorf("no holder pid")
	}
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("holder pid %d is gone: %w", pid, err)
	}
	st, err := procfs.ReadStat(pid)
	cmdline, cerr := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || cerr != nil || st.StartTime != rec.GetHolderStartTime() ||
		!strings.Contains(string(cmdline), "\x00"+HolderArg+"\x00") {
		unix.Close(pfd)
		return -1, fmt.Errorf("holder pid %d is gone (the pid is another process now)", pid)
	}
	return pfd, nil
}

// fetchTracked takes copies of the userfaultfds rec's holder holds for
// the processes that still run (same start time). A holder that is gone
// gives an error: the caller then copies every page.
func fetchTracked(rec *imagepb.PremigTracker) (map[int]*tracked, error) {
	pfd, err := holderPidfd(rec)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pfd)
	out := map[int]*tracked{}
	for _, tr := range rec.GetTracks() {
		st, err := procfs.ReadStat(int(tr.Pid))
		if err != nil || st.StartTime != tr.StartTime {
			continue // gone, or its pid reused: nothing tracked for it
		}
		fd, err := unix.PidfdGetfd(pfd, int(tr.HolderFd), 0)
		if err != nil {
			closeTracked(out)
			return nil, fmt.Errorf("take userfaultfd %d of holder pid %d: %w", tr.HolderFd, rec.HolderPid, err)
		}
		if link, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); link != "anon_inode:[userfaultfd]" {
			unix.Close(fd)
			closeTracked(out)
			return nil, fmt.Errorf("fd %d of holder pid %d is %q, not a userfaultfd", tr.HolderFd, rec.HolderPid, link)
		}
		out[int(tr.Pid)] = &tracked{pid: int(tr.Pid), start: tr.StartTime, fd: fd}
	}
	return out, nil
}

// endHolder ends rec's holder (if it still is that process): the
// registrations end with the last reference to their userfaultfds.
func endHolder(rec *imagepb.PremigTracker) {
	if rec == nil {
		return
	}
	pfd, err := holderPidfd(rec)
	if err != nil {
		return
	}
	defer unix.Close(pfd)
	unix.PidfdSendSignal(pfd, unix.SIGKILL, nil, 0)
	// wait for it to be gone (its parent, or init, reaps it), so that
	// the tracking has ended when we return
	fds := []unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}
	unix.Poll(fds, 1000)
}

func closeTracked(m map[int]*tracked) {
	for _, t := range m {
		unix.Close(t.fd)
	}
}

// RunHolder is the tracking holder's main: it holds its inherited fds
// (the userfaultfds) until every process named in args is gone.
func RunHolder(args []string) error {
	var pfds []unix.PollFd
	for _, a := range args {
		pid, err := strconv.Atoi(a)
		if err != nil {
			return fmt.Errorf("%s: bad pid %q", HolderArg, a)
		}
		if pfd, err := unix.PidfdOpen(pid, 0); err == nil {
			pfds = append(pfds, unix.PollFd{Fd: int32(pfd), Events: unix.POLLIN})
		}
	}
	// alive through the hangup and interrupt of the pre-dump's terminal
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	for len(pfds) > 0 {
		if _, err := unix.Poll(pfds, -1); err != nil && err != unix.EINTR {
			time.Sleep(time.Second)
		}
		live := pfds[:0]
		for _, p := range pfds {
			if p.Revents&(unix.POLLIN|unix.POLLHUP|unix.POLLERR) != 0 {
				unix.Close(int(p.Fd))
				continue
			}
			p.Revents = 0
			live = append(live, p)
		}
		pfds = live
	}
	return nil
}

// adoptOrphans takes, for the pids of want that have no tracking yet, the
// userfaultfds of other live holders (a pre-dump without --parent-path
// while an earlier chain's tracking runs: its registration would make ours
// fail with EBUSY). It returns the holders taken from, for the caller to
// end once its own holder runs.
func adoptOrphans(want []int, have map[int]*tracked) []*imagepb.PremigTracker {
	missing := map[int]bool{}
	for _, p := range want {
		if have[p] == nil {
			missing[p] = true
		}
	}
	if len(missing) == 0 {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var from []*imagepb.PremigTracker
	for _, e := range ents {
		hpid, err := strconv.Atoi(e.Name())
		if err != nil || hpid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", hpid))
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if err != nil || len(args) < 3 || args[1] != HolderArg {
			continue
		}
		st, err := procfs.ReadStat(hpid)
		if err != nil {
			continue
		}
		rec := &imagepb.PremigTracker{HolderPid: int32(hpid), HolderStartTime: st.StartTime}
		for i, a := range args[2:] {
			p, _ := strconv.Atoi(a)
			if !missing[p] {
				continue
			}
			pst, err := procfs.ReadStat(p)
			if err != nil {
				continue
			}
			rec.Tracks = append(rec.Tracks, &imagepb.PremigTrack{Pid: int32(p), StartTime: pst.StartTime, HolderFd: int32(3 + i)})
		}
		if len(rec.Tracks) == 0 {
			continue
		}
		got, err := fetchTracked(rec)
		if err != nil {
			continue
		}
		for p, tk := range got {
			have[p] = tk
			delete(missing, p)
		}
		from = append(from, rec)
	}
	return from
}

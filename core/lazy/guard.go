package lazy

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The guarantee: a restored task never runs on memory that did not come
// from the image. When the last holder of a userfaultfd closes it, the
// kernel unregisters its ranges and every later fault there maps a zero
// page: had ctr-cr been the only holder, its death mid-way (killed, or
// crashed) would leave the tree running on zeros. So a second process,
// the guard (ctr-cr re-executed with GuardArg, in a session of its own,
// ignoring the terminal's and the usual termination signals), holds a
// copy of every userfaultfd and a pidfd of every task, received before
// the task can run. If ctr-cr dies before it says the last page is in,
// the guard's end of their socket reads end-of-file while the
// userfaultfds are still open through it: a task touching a missing page
// stays blocked in the fault. The guard then kills the tasks (and their
// descendants, which may have forked), waits until they are dead, and
// only then lets the userfaultfds go. When ctr-cr itself finds the page
// source failing (a read error, a damaged pages file, a page server that
// went away) it kills the tree and tells the guard to as well. Killing
// both ctr-cr and the guard at the same instant with SIGKILL is the one
// case this cannot cover.

// GuardArg is the argument ctr-cr is re-executed with to become a guard.
const GuardArg = "__ctr-cr-lazy-guard"

const (
	guardHold = 'H'
	guardDone = 'D'
	guardKill = 'K'
	// guardAbort: the restore failed and its restorer kills and reaps
	// the tasks (traced still: they would not look dead to the guard
	// before that): kill without waiting.
	guardAbort = 'A'
)

// guard is ctr-cr's side of the guard process.
type guard struct {
	mu   sync.Mutex // sock: hold, say and release from any goroutine
	sock int
	cmd  *exec.Cmd
}

func startGuard(exe string) (*guard, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lazy pages: guard socket: %w", err)
	}
	child := os.NewFile(uintptr(fds[1]), "guard")
	cmd := exec.Command(exe, GuardArg)
	cmd.ExtraFiles = []*os.File{child}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	child.Close()
	if err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("lazy pages: start the guard: %w", err)
	}
	return &guard{sock: fds[0], cmd: cmd}, nil
}

// hold hands the guard a copy of uffd and/or pidfd (-1: none). Once
// sendmsg returns they are held by the guard's receive queue even if
// ctr-cr dies before the guard reads them.
func (g *guard) hold(uffd, pidfd int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.sock < 0 {
		return errors.New("lazy pages: the guard is gone")
	}
	var fds []int
	what := byte(0)
	if uffd >= 0 {
		fds, what = append(fds, uffd), what|1
	}
	if pidfd >= 0 {
		fds, what = append(fds, pidfd), what|2
	}
	if err := unix.Sendmsg(g.sock, []byte{guardHold, what}, unix.UnixRights(fds...), nil, 0); err != nil {
		return fmt.Errorf("lazy pages: hand the guard its copies: %w", err)
	}
	return nil
}

func (g *guard) done()  { g.say(guardDone) }
func (g *guard) kill()  { g.say(guardKill) }
func (g *guard) abort() { g.say(guardAbort) }

// say sends the outcome and waits for the guard to exit.
func (g *guard) say(b byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.sock < 0 {
		return
	}
	unix.Write(g.sock, []byte{b})
	g.releaseLocked()
}

func (g *guard) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseLocked()
}

func (g *guard) releaseLocked() {
	if g.sock < 0 {
		return
	}
	unix.Close(g.sock)
	g.sock = -1
	g.cmd.Wait()
}

// RunGuard is the guard process's main: fd 3 is its socket to ctr-cr. It
// returns the exit status.
func RunGuard() int {
	closeInherited()
	signal.Ignore(unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGPIPE, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU)
	const sock = 3
	var pidfds, uffds []int
	buf := make([]byte, 16)
	oob := make([]byte, unix.CmsgSpace(2*4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			killed := killTree(pidfds, true)
			fmt.Fprintf(os.Stderr, "ctr-cr: lazy pages: the ctr-cr serving the restored tree's memory is gone before its last page was in: killed the tree (%s) rather than let it run on missing memory\n", pidList(killed))
			return 1
		}
		switch buf[0] {
		case guardDone:
			return 0
		case guardKill, guardAbort:
			killTree(pidfds, buf[0] == guardKill)
			return 1
		case guardHold:
			fds, _ := parseRights(oob[:oobn])
			k := 0
			if buf[1]&1 != 0 && k < len(fds) {
				uffds = append(uffds, fds[k])
				k++
			}
			if buf[1]&2 != 0 && k < len(fds) {
				pidfds = append(pidfds, fds[k])
			}
		}
	}
}

// closeInherited closes what the guard inherited from ctr-cr without
// close-on-exec (a pipe end of --inherit-fd must not stay open here):
// every fd above the socket but the Go runtime's own (anon inodes: its
// epoll and eventfd, already open when this runs).
func closeInherited() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 3 {
			continue
		}
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || strings.HasPrefix(link, "anon_inode:") {
			continue
		}
		unix.Close(fd)
	}
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		f, err := unix.ParseUnixRights(&m)
		if err == nil {
			fds = append(fds, f...)
		}
	}
	return fds, nil
}

func pidList(pids []int) string {
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = "pid " + strconv.Itoa(p)
	}
	if len(s) == 0 {
		return "no task left"
	}
	return strings.Join(s, ", ")
}

// pidOf reads the pid of a pidfd from fdinfo (0: exited or unknown).
func pidOf(pidfd int) int {
	f, err := os.Open(fmt.Sprintf("/proc/self/fdinfo/%d", pidfd))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Pid:"); ok {
			p, _ := strconv.Atoi(strings.TrimSpace(v))
			if p > 0 {
				return p
			}
		}
	}
	return 0
}

// children lists the children of pid (all its threads').
func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// newChildren opens pidfds of the children of the tasks of pidfds that
// are not among them (processes forked since).
func newChildren(pidfds []int) []int {
	known := map[int]bool{}
	for _, fd := range pidfds {
		known[pidOf(fd)] = true
	}
	var out []int
	for _, fd := range pidfds {
		p := pidOf(fd)
		if p == 0 {
			continue
		}
		for _, c := range children(p) {
			if known[c] {
				continue
			}
			known[c] = true
			if cfd, err := unix.PidfdOpen(c, 0); err == nil {
				out = append(out, cfd)
			}
		}
	}
	return out
}

// killTree kills the tasks of pidfds and all their descendants (found
// again after each round of kills, as a running task may fork), then
// with wait, waits (at most 10 s) until they are dead. It returns the
// pids killed.
func killTree(pidfds []int, wait bool) []int {
	all := append([]int(nil), pidfds...)
	var pids []int
	seen := map[int]bool{}
	for round := 0; round < 4; round++ {
		grew := false
		for i := 0; i < len(all); i++ {
			p := pidOf(all[i])
			if p != 0 && !seen[p] {
				seen[p] = true
				pids = append(pids, p)
				grew = true
			}
			unix.PidfdSendSignal(all[i], unix.SIGKILL, nil, 0)
		}
		for _, p := range pids {
			for _, c := range children(p) {
				if !seen[c] {
					if fd, err := unix.PidfdOpen(c, 0); err == nil {
						unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
						all = append(all, fd)
					}
				}
			}
		}
		if !grew {
			break
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	if !wait {
		deadline = time.Now()
	}
	for _, fd := range all {
		for time.Now().Before(deadline) {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if n, _ := unix.Poll(pfd, 100); n > 0 {
				break
			}
		}
	}
	return pids
}

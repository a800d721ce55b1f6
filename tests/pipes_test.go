package tests

// Pipe cases: per-description flags, queued data restored once per pipe,
// packet-mode pipes, full pipes read through two descriptions.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCR_PipeFlags: every open file description of a pipe keeps its own
// flags (O_NONBLOCK, O_APPEND, O_DIRECT); queued data comes back once; a
// full 1 MiB pipe with an O_NONBLOCK write end opened twice for reading
// comes back byte for byte; a packet pipe keeps its message boundaries.
func TestCR_PipeFlags(t *testing.T) {
	runCase(t, Case{Name: "p_pipes", Src: "p_pipes.c"})
}

// newExtPipe makes a pipe for Case.ExtPipe: the read end is kept in
// r.ExtPipes (closed at cleanup), the write end returned.
func (r *Run) newExtPipe() *os.File {
	r.t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		r.t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(p[0], &st); err != nil {
		r.t.Fatal(err)
	}
	r.ExtPipes = append(r.ExtPipes, p[0])
	r.t.Cleanup(func() { unix.Close(p[0]) })
	r.extIno = st.Ino
	return os.NewFile(uintptr(p[1]), "ext-pipe-w")
}

// newExtSock makes a stream socketpair for Case.ExtSock: the test's end is
// kept in r.ExtSocks (closed at cleanup), the case's end returned; its
// inode is the --inherit-fd key of the next restore.
func (r *Run) newExtSock() *os.File {
	r.t.Helper()
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(p[1], &st); err != nil {
		r.t.Fatal(err)
	}
	r.ExtSocks = append(r.ExtSocks, p[0])
	r.t.Cleanup(func() { unix.Close(p[0]) })
	r.extIno = st.Ino
	return os.NewFile(uintptr(p[1]), "ext-sock")
}

// extPipeArgs returns the restore arguments and ctr-cr's extra files: for
// Case.ExtPipe, a fresh pipe's write end as fd 3 replacing the pipe the
// case writes to now; for Case.ExtSock, a fresh socketpair's end replacing
// the case's socket.
func (r *Run) extPipeArgs(args []string) ([]string, []*os.File) {
	if r.c.ExtSock {
		key := fmt.Sprintf("fd[3]:socket:[%d]", r.extIno)
		w := r.newExtSock()
		return append(slices.Clone(args), "--inherit-fd", key), []*os.File{w}
	}
	if !r.c.ExtPipe {
		return args, nil
	}
	key := fmt.Sprintf("fd[3]:pipe:[%d]", r.extIno)
	w := r.newExtPipe()
	return append(slices.Clone(args), "--inherit-fd", key), []*os.File{w}
}

// readAll reads fd to EOF.
func readAll(t *testing.T, fd int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, 65536)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("read pipe: %v", err)
		}
		if n == 0 {
			return out
		}
		out = append(out, buf[:n]...)
	}
}

// extRecords is what p_pipe_ext writes: records from..to-1.
func extRecords(from, to int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "rec %05d\n", i)
	}
	return b.String()
}

// TestCR_PipeExternal: a program whose output pipe's reader is outside the
// dump is dumped (the pipe recorded as external) and restored twice with
// --inherit-fd fd[3]:pipe:[INO] onto fresh pipes; the pipes, read in order,
// hold its output exactly once.
func TestCR_PipeExternal(t *testing.T) {
	r := runCase(t, Case{Name: "p_pipe_ext", Src: "p_pipe_ext.c", ExtPipe: true})
	var got []byte
	for i, fd := range r.ExtPipes {
		b := readAll(t, fd)
		t.Logf("pipe %d: %d bytes", i, len(b))
		got = append(got, b...)
	}
	if want := extRecords(0, 200); string(got) != want {
		t.Fatalf("the pipes hold %d bytes:\n%.300s\nwant the %d bytes of records 0..199", len(got), got, len(want))
	}
}

// TestCR_PipeExternalMissing: the image of a program with an external pipe
// is refused by a restore without --inherit-fd, naming the pipe and the
// option, and nothing is left running; show names the key to use.
func TestCR_PipeExternalMissing(t *testing.T) {
	r := startCase(t, Case{Name: "p_pipe_ext", Src: "p_pipe_ext.c", ExtPipe: true})
	img := filepath.Join(r.imgBase, "img0")
	if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img); err != nil {
		r.fatalf(stderr, "dump: %v", err)
	}
	if err := waitGone(r.Pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
	r.reaped = true
	key := fmt.Sprintf("pipe:[%d]", r.extIno)
	out, stderr, err := ctrcr(t, "show", img)
	if err != nil {
		t.Fatalf("show: %v\n%s", err, stderr)
	}
	t.Logf("show: %s", out)
	if !strings.Contains(out, "--inherit-fd fd[N]:"+key) {
		t.Errorf("show does not name --inherit-fd fd[N]:%s:\n%s", key, out)
	}
	_, stderr, err = ctrcr(t, "restore", "-D", img, "-d")
	if err == nil {
		t.Fatal("restore without --inherit-fd succeeded")
	}
	t.Logf("refused: %s", stderr)
	if !strings.Contains(stderr, key) || !strings.Contains(stderr, "--inherit-fd fd[N]:"+key) {
		t.Errorf("restore error does not name %s and the option: %s", key, stderr)
	}
	if err := unix.Kill(r.Pid, 0); err != unix.ESRCH {
		t.Errorf("pid %d exists after the failed restore (%v)", r.Pid, err)
	}
	_, stderr, err = ctrcr(t, "restore", "-D", img, "-d", "--inherit-fd", "fd[1]:/var/log/x.log")
	if err == nil || !strings.Contains(stderr, "unsupported key") {
		t.Errorf("--inherit-fd with a file key: %v %s", err, stderr)
	}
}

// TestCR_FifoDeleted: FIFOs unlinked while open come back unlinked, with
// their data, flags and /proc/self/fd names ("PATH (deleted)"), also when a
// file has taken the name since; nothing is left in the work dir.
func TestCR_FifoDeleted(t *testing.T) {
	runCase(t, Case{Name: "p_fifo_del", Src: "p_fifo_del.c"})
}

// TestNegative_PipeSync: a pipe description with O_DSYNC (reopened through
// /proc/self/fd; F_SETFL cannot set it) is refused by name at dump, and the
// program runs on unchanged. (O_ASYNC comes back: TestCR_GhostFown.)
func TestNegative_PipeSync(t *testing.T) {
	r := startCase(t, Case{Name: "p_pipe_sync", Src: "p_pipe_sync.c"})
	img := filepath.Join(t.TempDir(), "img")
	_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img)
	requireExitCode(t, err, stderr, 1)
	requireNoPanic(t, stderr)
	if !strings.Contains(stderr, "O_DSYNC") || !strings.Contains(stderr, "pipe:[") || !strings.Contains(stderr, strconv.Itoa(r.Pid)) {
		t.Errorf("dump error does not name the pid, the pipe and O_DSYNC:\n%s", stderr)
	}
	requireRunningUntraced(t, r.Pid)
	finishChild(t, r)
}

package tests

// Lazy restore (issue 16, restore --lazy-pages): the tree runs before its
// private anonymous memory is in; the pages come through userfaultfd on
// first touch and by a background pass. tests/cases/m_lazy.c checks its
// memory from inside after it forked, munmapped, dropped, moved memory
// and used a userfaultfd of its own while pages were still missing.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// lazyStats is the JSON line restore --lazy-pages --print-stats prints
// once the last page is in.
type lazyStats struct {
	Pages      uint64  `json:"lazy_pages"`
	OnFault    uint64  `json:"lazy_pages_on_fault"`
	Background uint64  `json:"lazy_pages_background"`
	Dropped    uint64  `json:"lazy_pages_dropped"`
	Forks      uint64  `json:"lazy_forks"`
	LastPageMs float64 `json:"lazy_last_page_ms"`
}

// parseLazyStats finds the lazy figures in a restore's standard output.
func parseLazyStats(t *testing.T, stdout string) lazyStats {
	t.Helper()
	for _, l := range strings.Split(stdout, "\n") {
		if strings.Contains(l, `"lazy_pages"`) {
			var st lazyStats
			if err := json.Unmarshal([]byte(l), &st); err != nil {
				t.Fatalf("lazy stats %q: %v", l, err)
			}
			return st
		}
	}
	t.Fatalf("no lazy stats line in the restore's output:\n%s", stdout)
	return lazyStats{}
}

// TestCR_LazyRestore: m_lazy (64 MiB) restored with --lazy-pages twice:
// restore -d returns once the last page is in; the foreground restore's
// case is told to go while pages are still coming, and checks everything
// from inside (PASS).
func TestCR_LazyRestore(t *testing.T) {
	t.Setenv("CTRCR_LAZY_SLOW_MS", "3")
	runCase(t, Case{Name: "m_lazy", Src: "m_lazy.c", RestoreArgs: []string{"--lazy-pages", "--print-stats"},
		AfterRestore: func(t *testing.T, cycle int, stdout string) {
			st := parseLazyStats(t, stdout)
			if st.Pages < 16384 || st.OnFault+st.Background+st.Dropped < st.Pages {
				t.Fatalf("cycle %d: lazy figures %+v: want at least the 64 MiB, all accounted for", cycle, st)
			}
		}})
}

// lazyImage starts m_lazy, dumps it and returns the run and the image.
func lazyImage(t *testing.T) (*Run, string) {
	t.Helper()
	r := startCase(t, Case{Name: "m_lazy", Src: "m_lazy.c"})
	if noCR {
		t.Skip("CTRCR_NOCR=1")
	}
	img := filepath.Join(r.imgBase, "img")
	if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img); err != nil {
		r.fatalf(stderr, "dump: %v", err)
	}
	if err := waitGone(r.Pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
	return r, img
}

// goLazyRestore tells the case to go, waits for the lazy restore started
// by startLazyRestore to end (exit 0) and for the case's PASS, and returns
// what the restore printed on stderr.
func goLazyRestore(t *testing.T, r *Run, cmd *exec.Cmd, errPath string, done chan struct{}) []byte {
	t.Helper()
	r.requestGo()
	select {
	case <-done:
	case <-time.After(goTimeout):
		t.Fatal("ctr-cr restore did not end")
	}
	r.reaped = true
	b, _ := os.ReadFile(errPath)
	if cmd.ProcessState.ExitCode() != 0 {
		r.fatalf(string(b), "restore: exit %d", cmd.ProcessState.ExitCode())
	}
	r.requirePass(string(b))
	return b
}

// startLazyRestore starts `ctr-cr restore --lazy-pages` of img (our
// child) with env added and waits until the tree runs (its pid file); it
// returns the command, its output file and a channel closed when it has
// exited.
func startLazyRestore(t *testing.T, r *Run, img string, env []string, args ...string) (*exec.Cmd, string, chan struct{}) {
	t.Helper()
	tmp := t.TempDir()
	errPath, pidFile := filepath.Join(tmp, "restore.stderr"), filepath.Join(tmp, "restore.pid")
	args = append(args, "--pid-file", pidFile)
	errF, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer errF.Close()
	cmd := exec.Command(testutil.BuildCtrCr(t), append([]string{"restore", "-D", img, "--lazy-pages"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = errF, errF
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	})
	if err := waitFile(pidFile, backTimeout, done); err != nil {
		b, _ := os.ReadFile(errPath)
		r.fatalf(string(b), "%v", err)
	}
	return cmd, errPath, done
}

// requireDead waits until the restored case and every process of its
// session (its fork child) are dead (gone or zombies): killed, never left
// running on missing memory; it must not have passed.
func requireDead(t *testing.T, r *Run, stderrPath string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		alive := ""
		for _, p := range append([]int{r.Pid}, sessionProcs(r.Pid)...) {
			if st := procState(p); st != "" && st != "Z" && st != "X" {
				alive = fmt.Sprintf("pid %d (state %s)", p, st)
			}
		}
		if alive == "" {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(stderrPath)
			r.fatalf(string(b), "%s of the restored case still runs after its page source died", alive)
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitGone(r.Pid, time.Second)
	r.reaped = true
	if l := lastLine(r.Out); l == "PASS" || strings.HasPrefix(l, "FAIL") {
		t.Fatalf("the case ran on after its page source died: last line %q", l)
	}
}

// waitStderr waits until the file at path holds want.
func waitStderr(t *testing.T, path, want string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("ctr-cr's stderr does not say %q:\n%s", want, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCR_LazyRestoreServerKilled: the ctr-cr serving the pages is killed
// (SIGKILL, at its 5th background chunk) while the case is told to go
// and touches its memory: the guard kills the restored case, which never
// runs on the zero pages the kernel would give once the userfaultfd is
// gone, and says why.
func TestCR_LazyRestoreServerKilled(t *testing.T) {
	r, img := lazyImage(t)
	_, errPath, done := startLazyRestore(t, r, img, []string{"CTRCR_FAULT=lazy-chunk:5", "CTRCR_LAZY_SLOW_MS=30"}, "-d")
	r.requestGo()
	<-done
	waitStderr(t, errPath, "killed the tree")
	requireDead(t, r, errPath)
}

// TestCR_LazyRestoreSourceGone: the image's pages file is cut short
// while the tree runs on a lazy restore: ctr-cr kills the tree and fails
// with an error naming the read that failed.
func TestCR_LazyRestoreSourceGone(t *testing.T) {
	r, img := lazyImage(t)
	cmd, errPath, done := startLazyRestore(t, r, img, []string{"CTRCR_LAZY_SLOW_MS=30"})
	if err := os.Truncate(filepath.Join(img, "pages-"+strconv.Itoa(r.Pid)+".img"), 4096); err != nil {
		t.Fatal(err)
	}
	r.requestGo()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("ctr-cr restore did not end after its pages file was cut")
	}
	stderr := waitStderr(t, errPath, "lazy pages")
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(stderr, "killed") || !strings.Contains(stderr, "read the pages") {
		t.Fatalf("restore: exit %d, stderr:\n%s", cmd.ProcessState.ExitCode(), stderr)
	}
	requireNoPanic(t, stderr)
	requireDead(t, r, errPath)
}

// TestCR_LazyRestoreEvents: the case is told to go as soon as it runs on
// a slow lazy restore: it forks, munmaps, drops and moves memory that has
// not come yet (the figures show pages dropped and a fork served) and
// checks everything from inside, its fork child too.
func TestCR_LazyRestoreEvents(t *testing.T) {
	r, img := lazyImage(t)
	cmd, errPath, done := startLazyRestore(t, r, img, []string{"CTRCR_LAZY_SLOW_MS=50"}, "--print-stats")
	b := goLazyRestore(t, r, cmd, errPath, done)
	st := parseLazyStats(t, string(b))
	if st.Forks < 1 || st.Dropped == 0 {
		t.Fatalf("lazy figures %+v: want a fork served and pages dropped by the program before they came", st)
	}
}

// TestCR_LazyRestoreCases: cases of other areas restored with
// --lazy-pages (each twice, the last in the foreground): threads and TLS,
// seccomp, credentials and a non-root program (the userfaultfd is made
// while the task is still root), brk, a Go program with a busy GC, VMA
// flags, guard pages, copy-on-write sharing in a tree of five, and a
// process tree.
func TestCR_LazyRestoreCases(t *testing.T) {
	// a background pass paced at 10 ms a chunk (a run of the image is at
	// least one): the cases run and are told to go while pages are
	// still missing
	t.Setenv("CTRCR_LAZY_SLOW_MS", "10")
	lazyArgs := []string{"--lazy-pages"}
	for _, c := range []Case{
		{Name: "TLSThreads", Src: "a_tls_threads.c"},
		{Name: "Seccomp", Src: "a_seccomp.c"},
		{Name: "Creds", Src: "a_creds.c"},
		{Name: "NonRoot", Src: "a_nonroot.c", Uid: 1000},
		{Name: "b_brk", Src: "b_brk.c"},
		// it compares its VmFlags from inside: during the lazy phase the
		// registered VMAs show "um" (userfaultfd missing)
		{Name: "m_vmflags", Src: "m_vmflags.c", Verify: waitLazyDone},
		{Name: "m_guard", Src: "m_guard.c"},
		{Name: "m_cowfork", Src: "m_cowfork.c"},
	} {
		t.Run(c.Name, func(t *testing.T) {
			c.RestoreArgs = lazyArgs
			runCase(t, c)
		})
	}
	t.Run("b_gogc", func(t *testing.T) {
		testutil.RequiresRoot(t)
		bin := buildGoCase(t, "b_gogc")
		runCase(t, Case{Name: "b_gogc", Cmd: []string{bin, "{WORKDIR}"}, RestoreArgs: lazyArgs})
	})
	t.Run("t_tree3", func(t *testing.T) {
		runTree(t, Case{Name: "t_tree3", Src: "t_tree3.c", RestoreArgs: lazyArgs})
	})
}

// startLazyPageServer starts `ctr-cr page-server --lazy-pages` serving
// the pages files of img (the source's image) on 127.0.0.1.
func startLazyPageServer(t *testing.T, img string) *pageServer {
	t.Helper()
	return &pageServer{testutil.StartListening(t, testutil.BuildCtrCr(t), "page-server", "--lazy-pages", "--address", "127.0.0.1", "--port", "0", "-D", img)}
}

// withoutPages copies the image img but its pages files into a new
// directory (the destination's copy) and returns it.
func withoutPages(t *testing.T, img string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "dst")
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(img, "*"))
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), "pages-") {
			continue
		}
		b, err := os.ReadFile(f)
		if err == nil {
			err = os.WriteFile(filepath.Join(dst, filepath.Base(f)), b, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestCR_LazyRestorePageServer: the image's pages stay at the source,
// served by `page-server --lazy-pages`; the destination's copy has no
// pages file and is restored with --lazy-pages --page-server: the case
// checks its memory (after its fork, munmap, ... while pages came over
// the connection) and the page server exits with success once the last
// page is in.
func TestCR_LazyRestorePageServer(t *testing.T) {
	r, img := lazyImage(t)
	ps := startLazyPageServer(t, img)
	dst := withoutPages(t, img)
	cmd, errPath, done := startLazyRestore(t, r, dst, []string{"CTRCR_LAZY_SLOW_MS=10"}, "--page-server", ps.Addr)
	goLazyRestore(t, r, cmd, errPath, done)
	if err := ps.wait(t); err != nil {
		t.Fatalf("page-server: %v\n%s", err, ps.Stderr())
	}
}

// TestCR_LazyRestorePageServerKilled: the source's page server is killed
// while the tree runs on a lazy restore from it: the restore fails naming
// the page server and the tree is killed.
func TestCR_LazyRestorePageServerKilled(t *testing.T) {
	r, img := lazyImage(t)
	ps := startLazyPageServer(t, img)
	dst := withoutPages(t, img)
	cmd, errPath, done := startLazyRestore(t, r, dst, []string{"CTRCR_LAZY_SLOW_MS=30"}, "--page-server", ps.Addr)
	ps.Cmd.Process.Kill()
	ps.Cmd.Wait()
	r.requestGo()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("ctr-cr restore did not end after its page server was killed")
	}
	stderr := waitStderr(t, errPath, "lazy pages")
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(stderr, "killed") || !strings.Contains(stderr, "page server "+ps.Addr) {
		t.Fatalf("restore: exit %d, stderr:\n%s", cmd.ProcessState.ExitCode(), stderr)
	}
	requireNoPanic(t, stderr)
	requireDead(t, r, errPath)
}

// TestNegative_LazyOwnUffd: a program holding a userfaultfd of its own
// (with memory registered) at the dump is refused by name, so no image
// ever carries userfaultfd state a lazy restore would have to share a
// mapping with; it runs on unchanged.
func TestNegative_LazyOwnUffd(t *testing.T) {
	requireDumpRefused(t, Case{Name: "m_lazy_own_uffd", Src: "m_lazy.c", CFlags: []string{"-DOWN_UFFD_AT_DUMP"}}, "userfaultfd")
}

// waitLazyDone waits until no VMA of the restored case shows the "um"
// VmFlag: its lazy restore has every page in and let the userfaultfd go.
func waitLazyDone(t *testing.T, r *Run) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(r.Pid) + "/smaps")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), " um") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: VMAs still registered for lazy pages after 30 s", r.Pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCR_LazyRestoreChain: m_lazy pre-dumped, then dumped with
// --parent-path (its pages are in the parent image, the tip holds only
// what was written since) and restored lazily from the tip: the parent's
// pages come lazily too (not written before the tree runs), and the case
// checks its memory after its fork, munmap, ... during the lazy phase.
func TestCR_LazyRestoreChain(t *testing.T) {
	r := startCase(t, Case{Name: "m_lazy", Src: "m_lazy.c"})
	if noCR {
		t.Skip("CTRCR_NOCR=1")
	}
	d1, d2 := filepath.Join(r.imgBase, "d1"), filepath.Join(r.imgBase, "d2")
	if _, stderr, err := ctrcr(t, "pre-dump", "-t", strconv.Itoa(r.Pid), "-D", d1); err != nil {
		r.fatalf(stderr, "pre-dump: %v", err)
	}
	if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", d2, "--parent-path", "../d1"); err != nil {
		r.fatalf(stderr, "dump: %v", err)
	}
	if err := waitGone(r.Pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
	cmd, errPath, done := startLazyRestore(t, r, d2, []string{"CTRCR_LAZY_SLOW_MS=20"}, "--print-stats")
	b := goLazyRestore(t, r, cmd, errPath, done)
	var eager struct {
		Pages uint64 `json:"pages_restored"`
	}
	if err := json.Unmarshal([]byte(strings.SplitN(string(b), "\n", 2)[0]), &eager); err != nil {
		t.Fatalf("restore stats: %v\n%s", err, b)
	}
	if st := parseLazyStats(t, string(b)); st.Pages < 16384 || eager.Pages > 1024 {
		t.Fatalf("lazy figures %+v, %d pages written before the tree ran: want the parent's 64 MiB lazy", st, eager.Pages)
	}
}

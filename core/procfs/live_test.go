package procfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Live tests: each wrapper reads /proc/self (as /proc/<getpid>); no root.

func TestLiveMaps(t *testing.T) {
	pid := os.Getpid()
	mfd, err := unix.MemfdCreate("procfs test", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(mfd)
	if err := unix.Ftruncate(mfd, 4096); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(mfd, 0, 4096, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	shanon, err := unix.Mmap(-1, 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(shanon)

	vmas, err := ReadMaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	find := func(b []byte) *VMA {
		a := uint64(uintptr(unsafe.Pointer(&b[0])))
		for i := range vmas {
			if vmas[i].Start == a {
				return &vmas[i]
			}
		}
		t.Fatalf("no VMA at %#x", a)
		return nil
	}
	if v := find(mem); v.Path != "/memfd:procfs test" || !v.Deleted || !v.Shared || v.Prot != unix.PROT_READ || v.Inode == 0 {
		t.Errorf("memfd VMA %+v", v)
	}
	if v := find(shanon); v.Path != "/dev/zero" || !v.Deleted || !v.Shared || v.Prot != rw || v.Size() != 8192 {
		t.Errorf("shared anon VMA %+v", v)
	}
	exe, err := Exe(pid)
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]bool{}
	for _, v := range vmas {
		paths[v.Path] = true
	}
	for _, p := range []string{exe, "[stack]", "[vdso]", "[vvar]", "[vsyscall]"} {
		if !paths[p] {
			t.Errorf("no VMA for %q", p)
		}
	}

	sm, err := ReadSmaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := sm.Find(uint64(uintptr(unsafe.Pointer(&shanon[0]))))
	if !ok || !e.HasFlag("sh") || e.Size != 8192 || e.Path != "/dev/zero" {
		t.Errorf("smaps shared anon entry %+v", e)
	}
	for _, e := range sm {
		if e.Path == "[stack]" && !e.HasFlag("gd") {
			t.Errorf("[stack] VmFlags %v lack gd", e.VmFlags)
		}
	}
}

func TestLiveStat(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pid, tid := os.Getpid(), unix.Gettid()
	st, err := ReadStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pid != pid || st.PPid != os.Getppid() || st.NumThreads < 1 || st.StartCode <= 1 || st.ArgEnd <= st.ArgStart {
		t.Errorf("stat %+v", st)
	}
	comm, err := Comm(pid, pid)
	if err != nil {
		t.Fatal(err)
	}
	if comm != st.Comm {
		t.Errorf("Comm %q != stat comm %q", comm, st.Comm)
	}
	ts, err := ReadTaskStat(pid, tid)
	if err != nil {
		t.Fatal(err)
	}
	if ts.Pid != tid || ts.State != 'R' {
		t.Errorf("task stat %+v", ts)
	}
}

func TestLiveStatus(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pid, tid := os.Getpid(), unix.Gettid()

	// Block SIGUSR2 (12) on this thread only: bit 11 of the thread's SigBlk.
	var set, old unix.Sigset_t
	set.Val[0] = 1 << (unix.SIGUSR2 - 1)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old); err != nil {
		t.Fatal(err)
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)

	s, err := ReadStatus(pid)
	if err != nil {
		t.Fatal(err)
	}
	if s.Pid != pid || s.Tgid != pid || s.PPid != os.Getppid() || s.Uid[0] != uint32(os.Getuid()) ||
		s.Gid[1] != uint32(os.Getegid()) || !s.Has("Umask") || s.NSpid[len(s.NSpid)-1] != pid || s.Threads < 1 {
		t.Errorf("status %+v", s)
	}
	ts, err := ReadTaskStatus(pid, tid)
	if err != nil {
		t.Fatal(err)
	}
	if ts.Pid != tid || ts.Tgid != pid || ts.SigBlk&(1<<(unix.SIGUSR2-1)) == 0 {
		t.Errorf("task status Pid=%d Tgid=%d SigBlk=%#x", ts.Pid, ts.Tgid, ts.SigBlk)
	}
}

func TestLiveFds(t *testing.T) {
	pid := os.Getpid()
	path := filepath.Join(t.TempDir(), "a file")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	fi, err := ReadFdInfo(pid, fd)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	want := uint32(unix.O_WRONLY | unix.O_APPEND | unix.O_CLOEXEC | OLargefile)
	if fi.Pos != 3 || fi.Flags != want || fi.Ino != st.Ino || fi.MntID <= 0 {
		t.Errorf("fdinfo %+v (want flags %#o)", fi, want)
	}

	efd, err := unix.Eventfd(7, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	fi, err = ReadFdInfo(pid, efd)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := fi.Field("eventfd-count"); v != "7" {
		t.Errorf("eventfd fdinfo %+v", fi)
	}

	fds, err := Fds(pid)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(fds) || !slices.Contains(fds, fd) || !slices.Contains(fds, efd) {
		t.Errorf("Fds = %v", fds)
	}
	link, err := FdLink(pid, fd)
	if err != nil || link != path {
		t.Errorf("FdLink = %q, %v; want %q", link, err, path)
	}
	if link, err := FdLink(pid, efd); err != nil || link != "anon_inode:[eventfd]" {
		t.Errorf("FdLink(eventfd) = %q, %v", link, err)
	}
}

func TestLiveTasks(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pid, tid := os.Getpid(), unix.Gettid()
	tasks, err := Tasks(pid)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(tasks) || !slices.Contains(tasks, pid) || !slices.Contains(tasks, tid) {
		t.Errorf("Tasks = %v (pid %d tid %d)", tasks, pid, tid)
	}
}

func TestLiveLimits(t *testing.T) {
	lims, err := ReadLimits(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(lims) != 16 {
		t.Fatalf("%d limits", len(lims))
	}
	for _, l := range lims {
		var r unix.Rlimit
		if err := unix.Getrlimit(l.Resource, &r); err != nil {
			t.Fatal(err)
		}
		if r.Cur != l.Cur || r.Max != l.Max {
			t.Errorf("resource %d: proc %d/%d, getrlimit %d/%d", l.Resource, l.Cur, l.Max, r.Cur, r.Max)
		}
	}
}

func TestLiveAuxvPersonality(t *testing.T) {
	pid := os.Getpid()
	raw, err := ReadAuxv(pid)
	if err != nil {
		t.Fatal(err)
	}
	aux, err := DecodeAuxv(raw)
	if err != nil {
		t.Fatal(err)
	}
	const atPagesz = 6
	if i := slices.IndexFunc(aux, func(e AuxvEntry) bool { return e.Type == atPagesz }); i < 0 || aux[i].Value != uint64(os.Getpagesize()) {
		t.Errorf("auxv %v lacks AT_PAGESZ", aux)
	}
	pers, err := Personality(pid)
	if err != nil {
		t.Fatal(err)
	}
	cur, _, errno := unix.Syscall(unix.SYS_PERSONALITY, 0xffffffff, 0, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	if pers != uint32(cur) {
		t.Errorf("Personality = %#x, personality(2) = %#x", pers, cur)
	}
}

func TestLiveLinks(t *testing.T) {
	pid := os.Getpid()
	wd, _ := os.Getwd()
	exe, _ := os.Executable()
	for _, tc := range []struct {
		name string
		fn   func(int) (string, error)
		want string
	}{
		{"Cwd", Cwd, wd}, {"Root", Root, "/"}, {"Exe", Exe, exe},
	} {
		if got, err := tc.fn(pid); err != nil || got != tc.want {
			t.Errorf("%s = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestLiveErrors(t *testing.T) {
	const gone = 1 << 30 // above pid_max
	_, err := ReadStatus(gone)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), PidPath(gone, "status")) {
		t.Errorf("ReadStatus(gone) = %v", err)
	}
	for _, fn := range []func(int) (string, error){Cwd, Root, Exe} {
		if _, err := fn(gone); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("readlink of gone pid: %v", err)
		}
	}
	if _, err := Tasks(gone); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Tasks(gone) = %v", err)
	}
	if _, err := ReadAuxv(gone); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadAuxv(gone) = %v", err)
	}
}

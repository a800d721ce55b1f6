package mounts

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/mountinfo"
	"github.com/ctr-cr/ctr-cr/internal/testutil"
	"golang.org/x/sys/unix"
)

// newRoot makes a directory with a static busybox in it, to chroot into.
func newRoot(t *testing.T) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("these tests need a static busybox on the PATH: %v", err)
	}
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// startContainer starts a process in a new private mount namespace whose root
// is root (bind-mounted on itself, then chroot) after running the shell setup
// with $R set to root. Nothing is mounted in the caller's namespace. The
// process is killed (by its pid) when the test ends.
func startContainer(t *testing.T, root, setup string) int {
	t.Helper()
	return startContainerNS(t, root, setup)
}

// startContainerNS is startContainer with more unshare(1) namespace flags
// ("-n", "-i", "-p": with -p the process is pid 1 of a new pid namespace).
func startContainerNS(t *testing.T, root, setup string, nsFlags ...string) int {
	t.Helper()
	script := "set -e\nR=" + root + "\nmount --bind $R $R\n" + setup + "\nexec chroot $R /bin/busybox sleep 600\n"
	args := append([]string{"-m", "--propagation", "private"}, nsFlags...)
	for _, f := range nsFlags {
		if f == "-p" {
			args = append(args, "--fork", "--kill-child")
		}
	}
	cmd := exec.Command("unshare", append(args, "sh", "-c", script)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	t.Cleanup(func() {
		once.Do(func() {
			cmd.Process.Kill()
			<-waited
		})
	})
	pid := cmd.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-waited:
			t.Fatalf("container setup failed: %s", stderr.String())
		default:
		}
		if cmd.Process.Pid == pid && len(nsFlags) > 0 && strings.Contains(strings.Join(nsFlags, " "), "-p") {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil && len(strings.Fields(string(b))) == 1 {
				fmt.Sscan(string(b), &pid)
			}
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid)); err == nil && l == root {
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && strings.HasSuffix(exe, "busybox") {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("container did not start: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func targetMounts(t *testing.T, pid int) []mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.ForPid(pid, nil)
	if err != nil {
		t.Fatal(err)
	}
	return infos
}

func findMount(infos []mountinfo.Info, mp, fstype string) *mountinfo.Info {
	var found *mountinfo.Info
	for i := range infos {
		if infos[i].MountPoint == mp && infos[i].FSType == fstype {
			found = &infos[i]
		}
	}
	return found
}

// TestSetnsNeedsUnshareFS checks the kernel rule threadns.RunInRoot relies on:
// setns(CLONE_NEWNS) fails with EINVAL while the fs struct is shared with the
// other threads of the process, and works after unshare(CLONE_FS).
func TestSetnsNeedsUnshareFS(t *testing.T) {
	testutil.RequiresRoot(t)
	pid := startContainer(t, newRoot(t), "")
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	errc := make(chan [2]error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		e1 := unix.Setns(fd, unix.CLONE_NEWNS)
		var e2 error
		if e2 = unix.Unshare(unix.CLONE_FS); e2 == nil {
			e2 = unix.Setns(fd, unix.CLONE_NEWNS)
		}
		errc <- [2]error{e1, e2}
	}()
	r := <-errc
	if !errors.Is(r[0], unix.EINVAL) {
		t.Errorf("setns without unshare(CLONE_FS): %v, want EINVAL", r[0])
	}
	if r[1] != nil {
		t.Errorf("setns after unshare(CLONE_FS): %v", r[1])
	}
}

const sourceSetup = `
mkdir -p $R/tmp $R/ext $R/proc $R/ro $R/sys $R/pts $R/mq $R/cg $R/bindtmp
mount -t tmpfs -o size=4m,mode=1777,nr_inodes=1000 tmpA $R/tmp
echo hello > $R/tmp/file; chown 123:456 $R/tmp/file; chmod 4640 $R/tmp/file
mkdir -p $R/tmp/dir/sub; echo deep > $R/tmp/dir/sub/deep; chmod 700 $R/tmp/dir
ln -s /etc/passwd $R/tmp/passwd-link
ln -s /etc $R/tmp/etc-link
mkfifo $R/tmp/fifo
ln $R/tmp/file $R/tmp/hardlink
mkdir $R/tmp/covered; echo under > $R/tmp/covered/under
mount -t tmpfs -o size=1m,mode=750 tmpB $R/tmp/covered
echo over > $R/tmp/covered/over
mount --make-shared $R/tmp
mount --bind $R/tmp/dir $R/bindtmp
mount --bind HOSTDIR $R/ext
mount -t proc proc $R/proc
mount -t tmpfs -o size=1m tmpR $R/ro
echo ro > $R/ro/f
mount -o remount,bind,ro,nosuid $R/ro
mount -t sysfs sysfs $R/sys
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts $R/pts
mount -t mqueue mqueue $R/mq
mount -t cgroup2 cgroup2 $R/cg
`

func TestCheckpointApplyRoundTrip(t *testing.T) {
	testutil.RequiresRoot(t)
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "hello.txt"), []byte("from host"), 0o644); err != nil {
		t.Fatal(err)
	}
	pid1 := startContainer(t, newRoot(t), strings.ReplaceAll(sourceSetup, "HOSTDIR", host))

	tree, err := ReadTree(pid1, TreeOptions{Externals: []string{"/ext"}})
	if err != nil {
		t.Fatalf("ReadTree: %v", err)
	}
	kinds := map[string]Kind{}
	for _, m := range tree.Mounts {
		kinds[m.MountPoint] = m.Kind
		t.Logf("saved %-14s %-8s %-8s flags %+v prop %+v opts %v", m.MountPoint, m.Kind, m.FSType, m.Flags, m.Propagation, m.FSOptions)
	}
	for mp, k := range map[string]Kind{"/": KindRoot, "/tmp": KindTmpfs, "/tmp/covered": KindTmpfs, "/bindtmp": KindBind,
		"/ext": KindExternal, "/proc": KindProc, "/ro": KindTmpfs, "/sys": KindSysfs, "/pts": KindDevpts, "/mq": KindMqueue, "/cg": KindCgroup2} {
		if kinds[mp] != k {
			t.Errorf("%s: kind %q, want %q", mp, kinds[mp], k)
		}
	}

	saved := map[string][]byte{}
	for _, m := range tree.Tmpfs() {
		var buf bytes.Buffer
		if err := SaveTmpfs(pid1, m.MountPoint, &buf); err != nil {
			t.Fatalf("SaveTmpfs %s: %v", m.MountPoint, err)
		}
		saved[m.MountPoint] = buf.Bytes()
	}
	// The /tmp archive: symlinks kept as symlinks and never followed; the
	// directory under the nested tmpfs is saved as it is underneath.
	hdrs := map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(saved["/tmp"]))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name] = h
		if strings.HasPrefix(h.Name, "etc-link/") || strings.HasPrefix(h.Name, "passwd-link/") {
			t.Errorf("followed a symlink: %s", h.Name)
		}
	}
	if h := hdrs["passwd-link"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "/etc/passwd" || h.Size != 0 {
		t.Errorf("passwd-link saved as %+v", h)
	}
	if hdrs["covered/under"] == nil || hdrs["covered/over"] != nil {
		t.Errorf("nested mount: under %v over %v, want only under", hdrs["covered/under"] != nil, hdrs["covered/over"] != nil)
	}
	if h := hdrs["file"]; h == nil || h.Uid != 123 || h.Gid != 456 || h.Mode != 04640 {
		t.Errorf("file saved as %+v", h)
	}
	if err := SaveTmpfs(pid1, "/ext", io.Discard); err == nil {
		t.Error("SaveTmpfs of a non-tmpfs mount succeeded")
	}
	if err := SaveTmpfs(pid1, "/tmp/dir", io.Discard); err == nil {
		t.Error("SaveTmpfs of a directory that is not a mount point succeeded")
	}

	// Through JSON, as through an image.
	js, err := json.Marshal(tree)
	if err != nil {
		t.Fatal(err)
	}
	var loaded Tree
	if err := json.Unmarshal(js, &loaded); err != nil {
		t.Fatal(err)
	}

	root2 := newRoot(t)
	pid2 := startContainer(t, root2, "")
	plan := Plan{
		Tree:      &loaded,
		Externals: map[string]string{"/ext": host},
		Tmpfs: func(m *Mount) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(saved[m.MountPoint])), nil
		},
	}
	rep, err := Apply(pid2, plan)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	t.Logf("created %v adjusted %v", rep.Created, rep.Adjusted)
	if len(rep.Created) != len(loaded.Mounts)-1 {
		t.Errorf("created %d mounts, want %d", len(rep.Created), len(loaded.Mounts)-1)
	}

	got := targetMounts(t, pid2)
	for _, in := range got {
		t.Logf("target %s", strings.Join([]string{in.MountPoint, in.FSType, in.Options, in.Optional, in.SuperOptions}, " "))
	}
	for _, m := range loaded.Mounts[1:] {
		in := findMount(got, m.MountPoint, m.FSType)
		if in == nil {
			t.Errorf("%s (%s) missing in the target", m.MountPoint, m.FSType)
			continue
		}
		if f := parseFlags(in.Options); f != m.Flags {
			t.Errorf("%s: flags %+v, want %+v", m.MountPoint, f, m.Flags)
		}
		if (in.Shared != 0) != m.Propagation.Shared {
			t.Errorf("%s: shared %v, want %v", m.MountPoint, in.Shared != 0, m.Propagation.Shared)
		}
		for _, o := range m.FSOptions {
			k, v, _ := strings.Cut(o, "=")
			if gv, ok := mountinfo.OptionValue(in.SuperOptions, k); !ok || gv != v {
				t.Errorf("%s: option %s=%q, want %q", m.MountPoint, k, gv, v)
			}
		}
	}
	// Parent-child relations: /tmp/covered is a child of /tmp.
	if c, p := findMount(got, "/tmp/covered", "tmpfs"), findMount(got, "/tmp", "tmpfs"); c == nil || p == nil || c.Parent != p.ID {
		t.Errorf("/tmp/covered is not mounted on /tmp")
	}

	in2 := func(p string) string { return fmt.Sprintf("/proc/%d/root%s", pid2, p) }
	for p, want := range map[string]string{"/tmp/file": "hello\n", "/tmp/dir/sub/deep": "deep\n", "/tmp/covered/over": "over\n",
		"/bindtmp/sub/deep": "deep\n", "/ext/hello.txt": "from host", "/ro/f": "ro\n"} {
		if b, err := os.ReadFile(in2(p)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", p, b, err, want)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(in2("/tmp/file"), &st); err != nil || st.Uid != 123 || st.Gid != 456 || st.Mode&07777 != 04640 {
		t.Errorf("/tmp/file: uid %d gid %d mode %o (%v)", st.Uid, st.Gid, st.Mode&07777, err)
	}
	var st2 unix.Stat_t
	if err := unix.Lstat(in2("/tmp/hardlink"), &st2); err != nil || st2.Ino != st.Ino {
		t.Errorf("/tmp/hardlink is not a hard link of /tmp/file")
	}
	if l, err := os.Readlink(in2("/tmp/passwd-link")); err != nil || l != "/etc/passwd" {
		t.Errorf("/tmp/passwd-link -> %q, %v", l, err)
	}
	if err := unix.Lstat(in2("/tmp/fifo"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("/tmp/fifo not a fifo (%v)", err)
	}
	if err := os.WriteFile(in2("/ro/g"), []byte("x"), 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write on /ro: %v, want EROFS", err)
	}
	if _, err := os.Stat(in2("/proc/self/status")); err != nil {
		t.Errorf("/proc in the target: %v", err)
	}
	if _, err := os.Stat(in2("/cg/cgroup.controllers")); err != nil {
		t.Errorf("/cg in the target: %v", err)
	}

	// A second Apply finds everything present and creates nothing.
	rep, err = Apply(pid2, plan)
	if err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	if len(rep.Created) != 0 || len(rep.Adjusted) != 0 {
		t.Errorf("second Apply: created %v adjusted %v, want nothing", rep.Created, rep.Adjusted)
	}
}

func TestApplyAdjustsAndFailsCleanly(t *testing.T) {
	testutil.RequiresRoot(t)
	pid1 := startContainer(t, newRoot(t), "mkdir $R/data $R/t\nmount -t tmpfs -o size=1m d $R/data\nmount -o remount,bind,ro $R/data\nmount -t tmpfs t $R/t")
	tree, err := ReadTree(pid1, TreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The target already has /data (read-write, like a runtime would make it).
	pid2 := startContainer(t, newRoot(t), "mkdir $R/data\nmount -t tmpfs -o size=1m d $R/data")
	rep, err := Apply(pid2, Plan{Tree: tree})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rep.Created, ",") != "/t" || strings.Join(rep.Adjusted, ",") != "/data" {
		t.Errorf("created %v adjusted %v", rep.Created, rep.Adjusted)
	}
	if in := findMount(targetMounts(t, pid2), "/data", "tmpfs"); in == nil || !mountinfo.HasOption(in.Options, "ro") {
		t.Errorf("/data not made read-only: %+v", in)
	}

	// An external without a source fails before touching the target.
	tree.Mounts = append(tree.Mounts, Mount{ID: 99999, ParentID: tree.Mounts[0].ID, MountPoint: "/x", Kind: KindExternal, FSType: "ext4", External: "/x"})
	pid3 := startContainer(t, newRoot(t), "")
	if _, err := Apply(pid3, Plan{Tree: tree}); err == nil || !strings.Contains(err.Error(), "/x") {
		t.Fatalf("Apply without an external source: %v", err)
	}
	// A failure in the middle detaches what was created.
	tree.Mounts = tree.Mounts[:len(tree.Mounts)-1]
	tree.Mounts = append(tree.Mounts, Mount{ID: 99999, ParentID: tree.Mounts[0].ID, MountPoint: "/bad", Kind: KindTmpfs, FSType: "tmpfs", FSOptions: []string{"huge=bogus"}})
	before := len(targetMounts(t, pid3))
	_, err = Apply(pid3, Plan{Tree: tree})
	if err == nil || !strings.Contains(err.Error(), "/bad") {
		t.Fatalf("Apply with a bad tmpfs option: %v", err)
	}
	t.Logf("error: %v", err)
	if after := len(targetMounts(t, pid3)); after != before {
		t.Errorf("%d mounts after a failed Apply, %d before", after, before)
	}
	for _, p := range []string{"/data", "/t", "/bad"} {
		if _, err := os.Lstat(fmt.Sprintf("/proc/%d/root%s", pid3, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("mount point %s left after a failed Apply (%v)", p, err)
		}
	}
}

func TestUnknownFilesystem(t *testing.T) {
	testutil.RequiresRoot(t)
	pid := startContainer(t, newRoot(t), "mkdir $R/ram\nmount -t ramfs ramfs $R/ram")
	_, err := ReadTree(pid, TreeOptions{})
	if !errors.Is(err, ErrUnsupportedFS) || !strings.Contains(err.Error(), "/ram") || !strings.Contains(err.Error(), "ramfs") {
		t.Fatalf("ReadTree with a ramfs mount: %v", err)
	}
	t.Logf("error: %v", err)
}

// TestApplyIntoOtherNamespaces: proc is mounted for the target's pid
// namespace, sysfs for its network namespace, mqueue for its IPC namespace.
func TestApplyIntoOtherNamespaces(t *testing.T) {
	testutil.RequiresRoot(t)
	pid1 := startContainer(t, newRoot(t), "mkdir $R/proc $R/sys $R/mq\nmount -t proc proc $R/proc\nmount -t sysfs sysfs $R/sys\nmount -t mqueue mqueue $R/mq")
	tree, err := ReadTree(pid1, TreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pid2 := startContainerNS(t, newRoot(t), "", "-p", "-n", "-i")
	if _, err := Apply(pid2, Plan{Tree: tree}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	in2 := func(p string) string { return fmt.Sprintf("/proc/%d/root%s", pid2, p) }
	ents, err := os.ReadDir(in2("/proc"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, e := range ents {
		if e.Name()[0] >= '0' && e.Name()[0] <= '9' {
			pids = append(pids, e.Name())
		}
	}
	if strings.Join(pids, " ") != "1" {
		t.Errorf("the target's /proc shows pids %v, want only 1 (its own pid namespace)", pids)
	}
	nets, err := os.ReadDir(in2("/sys/class/net"))
	if err != nil || len(nets) != 1 || nets[0].Name() != "lo" {
		t.Errorf("the target's /sys/class/net = %v (%v), want only lo", nets, err)
	}
}

// TestApplyRefusesSymlinkedMountPoint: a mount point that became a symlink
// in the target is not followed (the mount would land elsewhere).
func TestApplyRefusesSymlinkedMountPoint(t *testing.T) {
	testutil.RequiresRoot(t)
	pid1 := startContainer(t, newRoot(t), "mkdir $R/t\nmount -t tmpfs t $R/t")
	tree, err := ReadTree(pid1, TreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root2 := newRoot(t)
	pid2 := startContainer(t, root2, "mkdir $R/elsewhere\nln -s /elsewhere $R/t")
	before := len(targetMounts(t, pid2))
	_, err = Apply(pid2, Plan{Tree: tree})
	if err == nil || !strings.Contains(err.Error(), "/t") {
		t.Fatalf("Apply over a symlinked mount point: %v", err)
	}
	t.Logf("error: %v", err)
	if after := len(targetMounts(t, pid2)); after != before {
		t.Errorf("%d mounts after, %d before", after, before)
	}
}

// TestSaveTmpfsUnbindable: an unbindable tmpfs cannot be cloned; it is
// saved in place.
func TestSaveTmpfsUnbindable(t *testing.T) {
	testutil.RequiresRoot(t)
	pid := startContainer(t, newRoot(t), "mkdir $R/u\nmount -t tmpfs u $R/u\necho x > $R/u/f\nmount --make-unbindable $R/u")
	var buf bytes.Buffer
	if err := SaveTmpfs(pid, "/u", &buf); err != nil {
		t.Fatalf("SaveTmpfs: %v", err)
	}
	dst := t.TempDir()
	if err := RestoreTmpfs(openDir(t, dst), &buf); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "f")); err != nil || string(b) != "x\n" {
		t.Errorf("f = %q %v", b, err)
	}
}

// TestApplyFillsPresentTmpfs: a tmpfs the runtime made again (present, empty
// or not) gets the saved contents merged in.
func TestApplyFillsPresentTmpfs(t *testing.T) {
	testutil.RequiresRoot(t)
	pid1 := startContainer(t, newRoot(t), "mkdir -p $R/dev/shm\nmount -t tmpfs shm $R/dev/shm\necho saved > $R/dev/shm/a\nmkdir $R/dev/shm/sub\nmount -t tmpfs -o size=1m sub $R/dev/shm/sub")
	tree, err := ReadTree(pid1, TreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	saved := map[string][]byte{}
	for _, m := range tree.Tmpfs() {
		var buf bytes.Buffer
		if err := SaveTmpfs(pid1, m.MountPoint, &buf); err != nil {
			t.Fatal(err)
		}
		saved[m.MountPoint] = buf.Bytes()
	}
	pid2 := startContainer(t, newRoot(t), "mkdir -p $R/dev/shm\nmount -t tmpfs shm $R/dev/shm\necho runtime > $R/dev/shm/b\necho stale-and-longer > $R/dev/shm/a")
	rep, err := Apply(pid2, Plan{Tree: tree, Tmpfs: func(m *Mount) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(saved[m.MountPoint])), nil
	}})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if strings.Join(rep.Filled, ",") != "/dev/shm" || strings.Join(rep.Created, ",") != "/dev/shm/sub" {
		t.Errorf("filled %v created %v", rep.Filled, rep.Created)
	}
	for p, want := range map[string]string{"/dev/shm/a": "saved\n", "/dev/shm/b": "runtime\n"} {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s", pid2, p)); err != nil || string(b) != want {
			t.Errorf("%s = %q %v, want %q", p, b, err, want)
		}
	}
}

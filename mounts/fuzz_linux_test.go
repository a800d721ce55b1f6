package mounts

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/mountinfo"
	"github.com/ctr-cr/ctr-cr/internal/testutil"
	"golang.org/x/sys/unix"
)

// Seeds live in testdata/fuzz/<FuzzName>/ as well; run with e.g.
//
//	go test -run '^$' -fuzz '^FuzzRestoreTmpfs$' -fuzztime 60s ./mounts

// FuzzRestoreTmpfs restores arbitrary tar bytes (fresh, or merged) into a
// target directory that sits beside a sentinel tree and holds symlinks out
// of it (and, as root, mounts of the sentinel on top of two of its entries,
// as a present tmpfs walked in place would). Whatever the archive holds,
// nothing outside the target may change (no write, chown, chmod or utimes
// through a symlink or a mount), nothing may panic, and the space the
// target takes stays within a bound of the archive's own size (no
// expansion of a few bytes into gigabytes of zeros).
//
// As root each run happens in a throwaway mount namespace, on a small
// tmpfs (16 MiB) that holds both the target and the sentinel, so that a
// runaway write ends at ENOSPC and nothing is left mounted; otherwise in a
// plain temporary directory.
func FuzzRestoreTmpfs(f *testing.F) {
	for _, s := range fuzzTarSeeds(f) {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, merge bool) {
		base := t.TempDir()
		wd := time.AfterFunc(5*time.Second, func() {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			panic(fmt.Sprintf("restore of a %d-byte archive (merge %v) still running after 5s:\n%s", len(data), merge, buf[:n]))
		})
		defer wd.Stop()
		if err := inFuzzMountNS(base, func(mounted bool) error { return fuzzRestoreOnce(base, data, merge, mounted) }); err != nil {
			t.Fatal(err)
		}
	})
}

// fuzzSizeBound is the space a restore of data may take in the target:
// each archive entry costs at least a 512-byte header and may take a few
// pages, the data as much as it is.
func fuzzSizeBound(data []byte) int64 { return 16*int64(len(data)) + 1<<20 }

func fuzzRestoreOnce(base string, data []byte, merge, mounted bool) error {
	target := filepath.Join(base, "target")
	if err := fuzzSentinel(base, mounted); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	before, err := snapshotOutside(base)
	if err != nil {
		return err
	}
	dirfd, err := unix.Open(target, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dirfd)
	if merge {
		_ = MergeTmpfs(dirfd, bytes.NewReader(data))
	} else {
		_ = RestoreTmpfs(dirfd, bytes.NewReader(data))
	}
	after, err := snapshotOutside(base)
	if err != nil {
		return err
	}
	for k, v := range before {
		if after[k] != v {
			return fmt.Errorf("outside the target, %s changed: %q -> %q (archive of %d bytes, merge %v)", k, v, after[k], len(data), merge)
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			return fmt.Errorf("outside the target, %s appeared: %q (archive of %d bytes, merge %v)", k, v, len(data), merge)
		}
	}
	used, err := blocksUsed(target)
	if err != nil {
		return err
	}
	if used > fuzzSizeBound(data) {
		return fmt.Errorf("a %d-byte archive took %d bytes in the target", len(data), used)
	}
	return nil
}

// fuzzSentinel lays out base: outside/ (a file, a directory) and target/
// with symlinks to outside (relative, absolute, to the file), a directory
// and a file of its own; when mounted, outside/dir is bind-mounted on
// target/mnt and outside/secret on target/mf.
func fuzzSentinel(base string, mounted bool) error {
	out := filepath.Join(base, "outside")
	tgt := filepath.Join(base, "target")
	for _, d := range []string{out, filepath.Join(out, "dir"), tgt, filepath.Join(tgt, "d")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	for p, body := range map[string]string{filepath.Join(out, "secret"): "secret", filepath.Join(out, "dir/f"): "f", filepath.Join(tgt, "f"): "x"} {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
	}
	for name, to := range map[string]string{"up": "../outside", "abs": out, "sec": "../outside/secret", "dirf": "../outside/dir/f"} {
		if err := os.Symlink(to, filepath.Join(tgt, name)); err != nil {
			return err
		}
	}
	if !mounted {
		return nil
	}
	if err := os.Mkdir(filepath.Join(tgt, "mnt"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tgt, "mf"), nil, 0o644); err != nil {
		return err
	}
	if err := unix.Mount(filepath.Join(out, "dir"), filepath.Join(tgt, "mnt"), "", unix.MS_BIND, ""); err != nil {
		return err
	}
	return unix.Mount(filepath.Join(out, "secret"), filepath.Join(tgt, "mf"), "", unix.MS_BIND, "")
}

// snapshotOutside describes every entry under base but the target's
// subtree: type, mode, owner, size, mtime, symlink target, file contents.
func snapshotOutside(base string) (map[string]string, error) {
	return snapshotOutsideOf(base, "target")
}

// snapshotOutsideOf is snapshotOutside with the subtree named skip left out.
func snapshotOutsideOf(base, skip string) (map[string]string, error) {
	snap := map[string]string{}
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(base, p)
		if rel == skip {
			// the target itself may change (the archive's root entry),
			// but it must stay the directory it was
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return err
			}
			snap[rel] = fmt.Sprintf("ino %d type %o", st.Ino, st.Mode&unix.S_IFMT)
			return fs.SkipDir
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("ino %d mode %o owner %d:%d size %d mtime %d.%d", st.Ino, st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + l
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + strconv.Quote(string(b))
		}
		if sz, err := unix.Listxattr(p, nil); err == nil && sz > 0 {
			desc += fmt.Sprintf(" xattrs %d", sz)
		}
		snap[rel] = desc
		return nil
	})
	return snap, err
}

// blocksUsed adds up the space the files under dir take (hard links once),
// without entering the sentinel mounts on mnt and mf.
func blocksUsed(dir string) (int64, error) {
	var total int64
	seen := map[uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(dir, p); rel == "mnt" || rel == "mf" {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if !seen[st.Ino] {
			seen[st.Ino] = true
			total += st.Blocks * 512
		}
		return nil
	})
	return total, err
}

// inFuzzMountNS runs fn, as root on a locked thread in a new private mount
// namespace with a 16 MiB tmpfs mounted on base (the thread, and with it
// the namespace and the tmpfs, go away when fn returns); otherwise as it is.
func inFuzzMountNS(base string, fn func(mounted bool) error) error {
	if os.Geteuid() != 0 {
		return fn(false)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("unshare(CLONE_NEWNS): %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return fmt.Errorf("make / private: %w", err)
			}
			if err := unix.Mount("fuzz", base, "tmpfs", 0, "size=16m,mode=0755"); err != nil {
				return fmt.Errorf("mount tmpfs: %w", err)
			}
			return fn(true)
		}()
	}()
	return <-errc
}

// fuzzTarSeeds are archives of every entry kind RestoreTmpfs knows, and of
// the hostile shapes it must refuse.
func fuzzTarSeeds(f testing.TB) [][]byte {
	mk := func(hs ...*tar.Header) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range hs {
			h.Format = tar.FormatPAX
			h.ModTime = time.Unix(1000000000, 5)
			if h.Mode == 0 {
				h.Mode = 0o644
			}
			body := h.Linkname
			if h.Typeflag == tar.TypeReg {
				h.Linkname = ""
				h.Size = int64(len(body))
			}
			if err := tw.WriteHeader(h); err != nil {
				f.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				tw.Write([]byte(body))
			}
		}
		tw.Close()
		return buf.Bytes()
	}
	return [][]byte{
		mk(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o1777},
			&tar.Header{Name: "a/", Typeflag: tar.TypeDir},
			&tar.Header{Name: "a/f", Typeflag: tar.TypeReg, Linkname: "hello", PAXRecords: map[string]string{xattrPrefix + "user.k": "v"}},
			&tar.Header{Name: "a/h", Typeflag: tar.TypeLink, Linkname: "a/f"},
			&tar.Header{Name: "a/l", Typeflag: tar.TypeSymlink, Linkname: "../../outside"},
			&tar.Header{Name: "a/p", Typeflag: tar.TypeFifo},
			&tar.Header{Name: "a/n", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}),
		mk(&tar.Header{Name: "s", Typeflag: tar.TypeReg, Linkname: "abcd",
			PAXRecords: map[string]string{sparseMapKey: "0+2,100+2", sparseSizeKey: "4096"}}),
		mk(&tar.Header{Name: "up/x", Typeflag: tar.TypeReg, Linkname: "x"}),
		mk(&tar.Header{Name: "sec", Typeflag: tar.TypeReg, Linkname: "pwned"}),
		mk(&tar.Header{Name: "mf", Typeflag: tar.TypeReg, Linkname: "pwned", Mode: 0o4755}),
		mk(&tar.Header{Name: "mnt", Typeflag: tar.TypeDir, Mode: 0o777, Uid: 1234}),
		mk(&tar.Header{Name: "d/h", Typeflag: tar.TypeLink, Linkname: "dirf"}),
		mk(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Linkname: "merged"}),
		gnuSparseTar(1 << 40),
	}
}

// gnuSparseTar is a PAX "GNU sparse 1.0" entry of realsize bytes that holds
// no data: Go's tar reader expands it to realsize zero bytes.
func gnuSparseTar(realsize int64) []byte {
	rec := func(k, v string) string {
		r := " " + k + "=" + v + "\n"
		n := len(r)
		for len(strconv.Itoa(n))+len(r) != n {
			n = len(strconv.Itoa(n)) + len(r)
		}
		return strconv.Itoa(n) + r
	}
	pax := rec("GNU.sparse.major", "1") + rec("GNU.sparse.minor", "0") + rec("GNU.sparse.name", "big") +
		rec("GNU.sparse.realsize", strconv.FormatInt(realsize, 10))
	smap := "0\n" // no data extents
	var out bytes.Buffer
	out.Write(ustarBlock("PaxHeaders/big", 'x', len(pax)))
	out.Write(padBlock([]byte(pax)))
	out.Write(ustarBlock("GNUSparseFile.0/big", '0', 512))
	out.Write(padBlock([]byte(smap)))
	out.Write(make([]byte, 1024))
	return out.Bytes()
}

func padBlock(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// ustarBlock is a USTAR header block.
func ustarBlock(name string, typ byte, size int) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], "00000000000\x00")
	b[156] = typ
	copy(b[257:265], "ustar\x0000")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// TestRestoreTmpfsRefusesGNUSparse: a PAX GNU sparse entry of 1 TiB held
// in 3 KiB is refused before anything is written.
func TestRestoreTmpfsRefusesGNUSparse(t *testing.T) {
	dir := t.TempDir()
	for _, merge := range []bool{false, true} {
		fd := openDir(t, dir)
		var err error
		if merge {
			err = MergeTmpfs(fd, bytes.NewReader(gnuSparseTar(1<<40)))
		} else {
			err = RestoreTmpfs(fd, bytes.NewReader(gnuSparseTar(1<<40)))
		}
		if !errors.Is(err, ErrUnsafeEntry) {
			t.Fatalf("merge %v: %v, want ErrUnsafeEntry", merge, err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("merge %v: wrote %v", merge, ents)
		}
	}
}

// TestApplyLeavesHostSuperblocks: a saved tree (hostile, or taken from
// another host) that calls a config.json bind of a host tmpfs a tmpfs of
// the container, read-only superblock and contents included, is refused
// by name: the host's tmpfs is neither written into nor made read-only. "The host" is a private
// mount namespace of this test's thread.
func TestApplyLeavesHostSuperblocks(t *testing.T) {
	testutil.RequiresRoot(t)
	root := newRoot(t)
	host := t.TempDir()
	tarball := fuzzTarSeeds(t)[7] // "f" = "merged"
	err := inFuzzMountNS(host, func(bool) error {
		pid := startContainer(t, root, "mkdir $R/data\nmount --bind "+host+" $R/data\nmount -o remount,bind,ro $R/data")
		tree, err := ReadTree(pid, TreeOptions{})
		if err != nil {
			return err
		}
		for i := range tree.Mounts {
			if m := &tree.Mounts[i]; m.MountPoint == "/data" {
				m.Kind, m.SuperReadOnly, m.BindOf, m.BindPath = KindTmpfs, true, 0, ""
			}
		}
		_, err = Apply(pid, Plan{Tree: tree, Tmpfs: func(*Mount) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(tarball)), nil
		}})
		if !errors.Is(err, ErrInvalidTree) || !strings.Contains(err.Error(), "/data") {
			return fmt.Errorf("Apply: %v, want ErrInvalidTree naming /data", err)
		}
		t.Logf("error: %v", err)
		// without saved contents, only the read-only superblock is asked for
		_, err = Apply(pid, Plan{Tree: tree})
		if !errors.Is(err, ErrInvalidTree) || !strings.Contains(err.Error(), "read-only") {
			return fmt.Errorf("Apply without contents: %v, want ErrInvalidTree (read-only)", err)
		}
		t.Logf("error: %v", err)
		if _, err := os.Lstat(filepath.Join(host, "f")); err == nil {
			return errors.New("the saved contents were written into the host's tmpfs")
		}
		if err := os.WriteFile(filepath.Join(host, "still-rw"), nil, 0o644); err != nil {
			return fmt.Errorf("the host's tmpfs was made read-only: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCheckNewCgroup2: a new cgroup2 mount for a target in the caller's
// own cgroup namespace must carry exactly the options of the caller's
// cgroup2 mount (mounting it would set them hierarchy-wide). Only the
// check runs here: nothing is mounted.
func TestCheckNewCgroup2(t *testing.T) {
	own, err := ownMounts()
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	found := false
	for _, in := range own {
		if in.FSType == "cgroup2" {
			have, found = fsOptions(KindCgroup2, in.SuperOptions), true
			break
		}
	}
	same := &Mount{MountPoint: "/cg", Kind: KindCgroup2, FSType: "cgroup2", FSOptions: have}
	if err := checkNewCgroup2(os.Getpid(), same, own); err != nil {
		t.Errorf("the caller's own options refused: %v", err)
	}
	other := append([]string(nil), have...)
	if mountinfo.HasOption(strings.Join(have, ","), "nsdelegate") {
		other = other[:0]
		for _, o := range have {
			if o != "nsdelegate" {
				other = append(other, o)
			}
		}
	} else {
		other = append(other, "nsdelegate")
	}
	diff := &Mount{MountPoint: "/cg", Kind: KindCgroup2, FSType: "cgroup2", FSOptions: other}
	if err := checkNewCgroup2(os.Getpid(), diff, own); err == nil {
		t.Errorf("options %v accepted against the host's %v (cgroup2 mounted: %v)", other, have, found)
	}
}

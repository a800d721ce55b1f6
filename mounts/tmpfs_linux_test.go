package mounts

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type entry struct {
	name, link, body string
	typ              byte
	xattr            string // one extended attribute name, value "v"

	mode int64
}

func makeTar(t *testing.T, es ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: mode, Size: int64(len(e.body)),
			Uid: os.Getuid(), Gid: os.Getgid(), ModTime: time.Unix(1000000000, 5), Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if e.xattr != "" {
			h.PAXRecords = map[string]string{xattrPrefix + e.xattr: "v"}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func openDir(t *testing.T, p string) int {
	t.Helper()
	fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestRestoreTmpfsRejectsEscapes(t *testing.T) {
	outside := t.TempDir()
	tests := []struct {
		name string
		es   []entry
	}{
		{"dotdot", []entry{{name: "../x", typ: tar.TypeReg, body: "x"}}},
		{"inner dotdot", []entry{{name: "a/../../x", typ: tar.TypeReg, body: "x"}}},
		{"absolute", []entry{{name: "/x", typ: tar.TypeReg, body: "x"}}},
		{"through symlink to outside", []entry{{name: "l", typ: tar.TypeSymlink, link: outside}, {name: "l/x", typ: tar.TypeReg, body: "x"}}},
		{"through relative symlink", []entry{{name: "l", typ: tar.TypeSymlink, link: "../../../../.."}, {name: "l/x", typ: tar.TypeDir}}},
		{"overwrite symlink", []entry{{name: "l", typ: tar.TypeSymlink, link: outside + "/x"}, {name: "l", typ: tar.TypeReg, body: "x"}}},
		{"hardlink outside", []entry{{name: "h", typ: tar.TypeLink, link: "../etc/passwd"}}},
		{"hardlink through symlink", []entry{{name: "l", typ: tar.TypeSymlink, link: "/etc"}, {name: "h", typ: tar.TypeLink, link: "l/passwd"}}},
		{"socket type", []entry{{name: "s", typ: 'Z'}}},
		{"lsm label xattr", []entry{{name: "f", typ: tar.TypeReg, xattr: "security.selinux"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			err := RestoreTmpfs(openDir(t, dir), bytes.NewReader(makeTar(t, tc.es...)))
			if err == nil {
				t.Fatal("RestoreTmpfs accepted a hostile archive")
			}
			t.Logf("error: %v", err)
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Fatalf("wrote outside: %v", ents)
			}
		})
	}
}

func TestSaveDirRestoreRoundTrip(t *testing.T) {
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(src, "f"), []byte("data"), 0o640))
	must(unix.Chmod(filepath.Join(src, "f"), 0o4751))
	must(os.MkdirAll(filepath.Join(src, "d/e"), 0o711))
	must(os.WriteFile(filepath.Join(src, "d/e/g"), []byte("deep"), 0o600))
	must(os.Symlink("/etc/passwd", filepath.Join(src, "passwd")))
	must(os.Symlink("/etc", filepath.Join(src, "etcdir")))
	must(os.Link(filepath.Join(src, "f"), filepath.Join(src, "hard")))
	must(unix.Mkfifo(filepath.Join(src, "fifo"), 0o620))
	must(unix.Chmod(filepath.Join(src, "fifo"), 0o620))
	mt := time.Unix(1500000000, 123456789)
	must(os.Chtimes(filepath.Join(src, "d/e/g"), mt, mt))
	must(os.Chtimes(filepath.Join(src, "d"), mt, mt))

	xattrs := unix.Setxattr(filepath.Join(src, "f"), "user.test", []byte("v1"), 0) == nil
	xattrs = xattrs && os.Geteuid() == 0 // trusted.* and security.* need CAP_SYS_ADMIN
	if xattrs {
		must(unix.Setxattr(filepath.Join(src, "d"), "trusted.t", []byte("v2"), 0))
		must(unix.Setxattr(filepath.Join(src, "d"), "security.selinux", []byte("x"), 0))
	}
	var buf bytes.Buffer
	must(SaveDir(openDir(t, src), &buf))
	names := map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names[h.Name] = h
	}
	if h := names["passwd"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "/etc/passwd" {
		t.Errorf("passwd symlink saved as %+v", h)
	}
	for n := range names {
		if len(n) > 7 && n[:7] == "etcdir/" {
			t.Errorf("followed the symlink etcdir: %s", n)
		}
	}
	if h := names["hard"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "f" {
		t.Errorf("hard link saved as %+v", h)
	}

	dst := t.TempDir()
	must(RestoreTmpfs(openDir(t, dst), bytes.NewReader(buf.Bytes())))
	b, err := os.ReadFile(filepath.Join(dst, "d/e/g"))
	if err != nil || string(b) != "deep" {
		t.Errorf("d/e/g = %q, %v", b, err)
	}
	for _, c := range []struct {
		name string
		mode os.FileMode
	}{{"f", 0o751 | os.ModeSetuid}, {"d", 0o711 | os.ModeDir}, {"fifo", 0o620 | os.ModeNamedPipe}} {
		fi, err := os.Lstat(filepath.Join(dst, c.name))
		if err != nil || fi.Mode() != c.mode {
			t.Errorf("%s: mode %v, want %v (%v)", c.name, fi.Mode(), c.mode, err)
		}
	}
	if l, err := os.Readlink(filepath.Join(dst, "passwd")); err != nil || l != "/etc/passwd" {
		t.Errorf("passwd -> %q %v", l, err)
	}
	var s1, s2 unix.Stat_t
	must(unix.Lstat(filepath.Join(dst, "f"), &s1))
	must(unix.Lstat(filepath.Join(dst, "hard"), &s2))
	if s1.Ino != s2.Ino {
		t.Error("hard link not restored as a hard link")
	}
	for _, n := range []string{"d/e/g", "d"} {
		fi, err := os.Lstat(filepath.Join(dst, n))
		if err != nil || !fi.ModTime().Equal(mt) {
			t.Errorf("%s mtime %v, want %v", n, fi.ModTime(), mt)
		}
	}
	if xattrs {
		v := make([]byte, 16)
		if n, err := unix.Getxattr(filepath.Join(dst, "f"), "user.test", v); err != nil || string(v[:n]) != "v1" {
			t.Errorf("f user.test = %q %v", v[:n], err)
		}
		if n, err := unix.Getxattr(filepath.Join(dst, "d"), "trusted.t", v); err != nil || string(v[:n]) != "v2" {
			t.Errorf("d trusted.t = %q %v", v[:n], err)
		}
		if names := names["d/"]; names == nil || names.PAXRecords[xattrPrefix+"security.selinux"] != "" {
			t.Errorf("security.selinux saved")
		}
	} else {
		t.Log("no user xattrs on this filesystem: xattrs not checked")
	}
	// Extracting twice fails on the existing files, not silently.
	if err := RestoreTmpfs(openDir(t, dst), bytes.NewReader(buf.Bytes())); err == nil || errors.Is(err, ErrUnsafeEntry) {
		t.Errorf("second extraction: %v, want an exists error", err)
	}
}

func TestMergeTmpfs(t *testing.T) {
	dst := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dst, "f"), []byte("old contents, longer"), 0o600))
	must(os.WriteFile(filepath.Join(dst, "keep"), []byte("k"), 0o600))
	must(os.Mkdir(filepath.Join(dst, "d"), 0o700))
	must(os.Symlink("old", filepath.Join(dst, "l")))
	must(unix.Mkfifo(filepath.Join(dst, "p"), 0o600))
	ar := makeTar(t,
		entry{name: "./", typ: tar.TypeDir, mode: 0o755},
		entry{name: "f", typ: tar.TypeReg, body: "new", mode: 0o640},
		entry{name: "d/", typ: tar.TypeDir, mode: 0o711},
		entry{name: "d/x", typ: tar.TypeReg, body: "x"},
		entry{name: "l", typ: tar.TypeSymlink, link: "new"},
		entry{name: "p", typ: tar.TypeFifo, mode: 0o644},
	)
	if err := RestoreTmpfs(openDir(t, dst), bytes.NewReader(ar)); err == nil {
		t.Fatal("RestoreTmpfs into a non-empty directory succeeded")
	}
	must(MergeTmpfs(openDir(t, dst), bytes.NewReader(ar)))
	for n, want := range map[string]string{"f": "new", "keep": "k", "d/x": "x"} {
		if b, err := os.ReadFile(filepath.Join(dst, n)); err != nil || string(b) != want {
			t.Errorf("%s = %q %v, want %q", n, b, err, want)
		}
	}
	if l, _ := os.Readlink(filepath.Join(dst, "l")); l != "new" {
		t.Errorf("l -> %q", l)
	}
	if fi, err := os.Lstat(filepath.Join(dst, "p")); err != nil || fi.Mode() != os.ModeNamedPipe|0o644 {
		t.Errorf("p: %v %v", fi.Mode(), err)
	}
	// Another type in the way is an error, not a replacement.
	bad := makeTar(t, entry{name: "d", typ: tar.TypeReg, body: "x"})
	if err := MergeTmpfs(openDir(t, dst), bytes.NewReader(bad)); err == nil {
		t.Error("merge replaced a directory by a file")
	}
	bad = makeTar(t, entry{name: "f", typ: tar.TypeDir})
	if err := MergeTmpfs(openDir(t, dst), bytes.NewReader(bad)); err == nil {
		t.Error("merge replaced a file by a directory")
	}
}

// TestSparseRoundTrip: a 2 GiB file holding 8 KiB is saved by its data
// (the tar stays small, as `truncate -s 2G /dev/shm/x` in a container
// must not make a 2 GB archive) and comes back with its size, its data at
// their offsets and its holes (SEEK_DATA finds the same data).
func TestSparseRoundTrip(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	f, err := os.Create(filepath.Join(src, "big"))
	if err != nil {
		t.Fatal(err)
	}
	const size = 2 << 30
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte("a"), 4096), 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte("z"), 4096), size-4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var buf bytes.Buffer
	if err := SaveDir(openDir(t, src), &buf); err != nil {
		t.Fatal(err)
	}
	if buf.Len() > 1<<20 {
		t.Fatalf("tar of a 2 GiB file holding 8 KiB: %d bytes", buf.Len())
	}
	if err := RestoreTmpfs(openDir(t, dst), bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	g, err := os.Open(filepath.Join(dst, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if fi, _ := g.Stat(); fi.Size() != size {
		t.Fatalf("size %d, want %d", fi.Size(), size)
	}
	b := make([]byte, 4096)
	for _, c := range []struct {
		off  int64
		want byte
	}{{1 << 20, 'a'}, {size - 4096, 'z'}, {0, 0}, {1 << 30, 0}} {
		if _, err := g.ReadAt(b, c.off); err != nil || !bytes.Equal(b, bytes.Repeat([]byte{c.want}, 4096)) {
			t.Fatalf("at %d: %v, want %q", c.off, err, c.want)
		}
	}
	if d, err := unix.Seek(int(g.Fd()), 0, unix.SEEK_DATA); err != nil || d > 1<<20 || d == 0 {
		t.Fatalf("SEEK_DATA from 0: %d %v, want the first data at 1 MiB (a hole before it)", d, err)
	}
}

// TestSparseRejectsBadMaps: sparse records from a hostile image (extents
// out of the file, overlapping, not adding up, a huge count) are refused
// with ErrUnsafeEntry before anything is written.
func TestSparseRejectsBadMaps(t *testing.T) {
	for _, c := range []struct{ m, size, body string }{
		{"0+4,2+4", "100", "12345678"},
		{"96+8", "100", "12345678"},
		{"0+4", "100", "12345678"},
		{"0+8", "-1", "12345678"},
		{"x", "100", "12345678"},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		h := &tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(c.body)), Format: tar.FormatPAX,
			PAXRecords: map[string]string{sparseMapKey: c.m, sparseSizeKey: c.size}}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(c.body))
		tw.Close()
		err := RestoreTmpfs(openDir(t, t.TempDir()), &buf)
		if !errors.Is(err, ErrUnsafeEntry) {
			t.Errorf("map %q size %s: %v, want ErrUnsafeEntry", c.m, c.size, err)
		}
	}
}

package image

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

func TestOpenErrors(t *testing.T) {
	pm := magicOf("pagemap-10.img")
	head := &imagepb.PagemapHead{PagesFile: "pages-10.img", PageSize: PageSize}
	for _, tc := range []struct {
		name   string
		mutate func(t *testing.T, dir string)
		is     error
		msg    string // substring; DIR stands for the image directory
	}{{
		name:   "missing inventory",
		mutate: func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, InventoryName)) },
		is:     fs.ErrNotExist,
		msg:    "image DIR: inventory.img: missing, so this is not a complete image",
	}, {
		name: "wrong inventory magic",
		mutate: func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, InventoryName))
			copy(b, "CRIU")
			writeFile(t, dir, InventoryName, b)
		},
		is:  ErrCorrupt,
		msg: "image DIR: inventory.img: offset 0: corrupt: magic CRIU, want CRIN for a inventory file",
	}, {
		name: "wrong core magic",
		mutate: func(t *testing.T, dir string) {
			writeFile(t, dir, "core-10.img", frame(magicOf("mm-1.img"), &imagepb.TaskCore{Pid: 10}))
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: "image DIR: core-10.img: offset 0: corrupt: magic CRMM, want CRCO",
	}, {
		name: "truncated entry",
		mutate: func(t *testing.T, dir string) {
			b := frame(magicOf("core-10.img"), &imagepb.TaskCore{Pid: 10, Comm: "abcdef"})
			writeFile(t, dir, "core-10.img", b[:len(b)-3])
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: "image DIR: core-10.img: entry 0 at offset 4: corrupt: entry length 10 exceeds the 7 bytes left in the file",
	}, {
		name: "length 0xFFFFFFFF",
		mutate: func(t *testing.T, dir string) {
			b := append(frame(magicOf("files.img"), &imagepb.FileEntry{Id: 1}, &imagepb.FileEntry{Id: 2}),
				0xff, 0xff, 0xff, 0xff, 1, 2, 3)
			writeFile(t, dir, "files.img", b)
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: "image DIR: files.img: entry 2 at offset 16: corrupt: entry length 4294967295 exceeds the 67108864-byte entry limit",
	}, {
		name: "trailing bytes",
		mutate: func(t *testing.T, dir string) {
			writeFile(t, dir, "fdinfo-12.img", append(frame(magicOf("fdinfo-12.img")), 0, 0))
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: "image DIR: fdinfo-12.img: entry 0 at offset 4: corrupt: 2 trailing bytes are too short",
	}, {
		name: "bad protobuf",
		mutate: func(t *testing.T, dir string) {
			writeFile(t, dir, "fdinfo-12.img", append(frame(magicOf("fdinfo-12.img")), 2, 0, 0, 0, 0xff, 0xff))
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: "image DIR: fdinfo-12.img: entry 0 at offset 4: corrupt: bad ctrcr.image.v1.FdEntry entry",
	}, {
		name: "bit flip in core",
		mutate: func(t *testing.T, dir string) {
			p := filepath.Join(dir, "core-10.img")
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 0x10
			writeFile(t, dir, "core-10.img", b)
		},
		is:  ErrChecksum,
		msg: "image DIR: core-10.img: checksum mismatch (file damaged or modified)",
	}, {
		name: "bit flip in a length",
		mutate: func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "core-10.img"))
			b[7] ^= 0x80 // the checksum error wins over the framing error it causes
			writeFile(t, dir, "core-10.img", b)
		},
		is:  ErrChecksum,
		msg: "image DIR: core-10.img: checksum mismatch (file damaged or modified)",
	}, {
		name: "bit flip in pages",
		mutate: func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "pages-10.img"))
			b[5000] ^= 1
			writeFile(t, dir, "pages-10.img", b)
		},
		is:  ErrChecksum,
		msg: "image DIR: pages-10.img: checksum mismatch",
	}, {
		name: "truncated file",
		mutate: func(t *testing.T, dir string) {
			os.Truncate(filepath.Join(dir, "mm-10.img"), 10)
		},
		is:  ErrChecksum,
		msg: "image DIR: mm-10.img: checksum mismatch (file damaged or modified): size 10, inventory.img records",
	}, {
		name:   "listed file missing",
		mutate: func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "files.img")) },
		is:     fs.ErrNotExist,
		msg:    "image DIR: files.img: open ",
	}, {
		name: "symlink",
		mutate: func(t *testing.T, dir string) {
			p := filepath.Join(dir, "core-12.img")
			os.Rename(p, p+".real")
			os.Symlink("core-12.img.real", p)
		},
		is:  ErrCorrupt,
		msg: "image DIR: core-12.img: corrupt: is a symbolic link",
	}, {
		name: "fifo",
		mutate: func(t *testing.T, dir string) {
			p := filepath.Join(dir, "core-12.img")
			os.Remove(p)
			if err := mkfifo(p); err != nil {
				t.Skip("mkfifo:", err)
			}
		},
		is:  ErrCorrupt,
		msg: "image DIR: core-12.img: corrupt: not a regular file",
	}, {
		name:   "extra unlisted file",
		mutate: func(t *testing.T, dir string) { writeFile(t, dir, "core-99.img", frame(magicOf("core-99.img"))) },
		is:     ErrCorrupt,
		msg:    "image DIR: core-99.img: corrupt: not listed in inventory.img",
	}, {
		name: "pagemap total differs from pages size",
		mutate: func(t *testing.T, dir string) {
			writeFile(t, dir, "pagemap-10.img", frame(pm, head, &imagepb.PagemapEntry{Vaddr: 0x400000, NrPages: 3}))
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: "image DIR: pagemap-10.img: corrupt: runs total 3 pages but pages-10.img holds 4",
	}, {
		name: "pagemap more pages than file",
		mutate: func(t *testing.T, dir string) {
			writeFile(t, dir, "pagemap-10.img", frame(pm, head, &imagepb.PagemapEntry{Vaddr: 0x400000, NrPages: 1 << 50}))
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: "image DIR: pagemap-10.img: entry 1: corrupt: run vaddr 0x400000 nr_pages 1125899906842624: more pages than the pages file holds (4)",
	}, {
		name: "pagemap overlapping runs",
		mutate: func(t *testing.T, dir string) {
			writeFile(t, dir, "pagemap-10.img", frame(pm, head,
				&imagepb.PagemapEntry{Vaddr: 0x400000, NrPages: 2},
				&imagepb.PagemapEntry{Vaddr: 0x800000, NrPages: 1},
				&imagepb.PagemapEntry{Vaddr: 0x401000, NrPages: 1}))
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: "image DIR: pagemap-10.img: entry 3: corrupt: run vaddr 0x401000 nr_pages 1 overlaps run 0",
	}, {
		name: "pagemap unaligned run",
		mutate: func(t *testing.T, dir string) {
			writeFile(t, dir, "pagemap-10.img", frame(pm, head, &imagepb.PagemapEntry{Vaddr: 0x400010, NrPages: 4}))
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: "not page-aligned",
	}, {
		name: "pagemap wrapping run",
		mutate: func(t *testing.T, dir string) {
			writeFile(t, dir, "pagemap-10.img", frame(pm, head, &imagepb.PagemapEntry{Vaddr: 0xffff_ffff_ffff_e000, NrPages: 4}))
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: "wraps around",
	}, {
		name: "pagemap wrong pages file",
		mutate: func(t *testing.T, dir string) {
			h := proto.CloneOf(head)
			h.PagesFile = "pages-12.img"
			writeFile(t, dir, "pagemap-10.img", frame(pm, h, &imagepb.PagemapEntry{Vaddr: 0x400000, NrPages: 4}))
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: `image DIR: pagemap-10.img: entry 0: corrupt: head names pages file "pages-12.img", want "pages-10.img"`,
	}, {
		name: "pages without pagemap",
		mutate: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "pagemap-12.img"))
			resign(t, dir, func(inv *imagepb.Inventory) {
				inv.Files = removeSum(inv.Files, "pagemap-12.img")
			})
		},
		is:  ErrCorrupt,
		msg: "image DIR: inventory.img: entry 0: corrupt: pages-12.img is listed without pagemap-12.img",
	}, {
		name: "two entries where one is expected",
		mutate: func(t *testing.T, dir string) {
			writeFile(t, dir, "core-12.img", frame(magicOf("core-12.img"), &imagepb.TaskCore{Pid: 12}, &imagepb.TaskCore{Pid: 12}))
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: "image DIR: core-12.img: entry 1 at offset 10: corrupt: more than one entry: core files hold exactly one ctrcr.image.v1.TaskCore",
	}, {
		name: "no entry where one is expected",
		mutate: func(t *testing.T, dir string) {
			writeFile(t, dir, "mm-12.img", frame(magicOf("mm-12.img")))
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: "image DIR: mm-12.img: offset 4: corrupt: no entry: mm files hold exactly one ctrcr.image.v1.MmEntry",
	}, {
		name: "future format version",
		mutate: func(t *testing.T, dir string) {
			resign(t, dir, func(inv *imagepb.Inventory) { inv.FormatVersion = 4 })
		},
		is:  ErrVersion,
		msg: "image DIR: inventory.img: unsupported image format version 4 (this ctr-cr reads versions 1 to 3)",
	}, {
		name: "future inventory with more entries",
		mutate: func(t *testing.T, dir string) {
			inv := readInv(t, dir)
			inv.FormatVersion = 4
			writeFile(t, dir, InventoryName, frame(magicOf(InventoryName), inv, inv))
		},
		is:  ErrVersion,
		msg: "unsupported image format version 4",
	}, {
		name: "inventory lists an unknown name",
		mutate: func(t *testing.T, dir string) {
			resign(t, dir, func(inv *imagepb.Inventory) {
				inv.Files = append(inv.Files, &imagepb.FileSum{Name: "../etc.img", Checksum: make([]byte, 32), Size: 8})
			})
		},
		is:  ErrCorrupt,
		msg: `files[14] "../etc.img": not an image file name`,
	}, {
		name: "core pid differs from file name",
		mutate: func(t *testing.T, dir string) {
			writeFile(t, dir, "core-12.img", frame(magicOf("core-12.img"), &imagepb.TaskCore{Pid: 13}))
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: "image DIR: core-12.img: entry 0: corrupt: pid 13 in the core of pid 12",
	}, {
		name: "per-pid file of a pid not in pstree",
		mutate: func(t *testing.T, dir string) {
			writeFile(t, dir, "fdinfo-77.img", frame(magicOf("fdinfo-77.img")))
			resign(t, dir, nil, "fdinfo-77.img")
		},
		is:  ErrCorrupt,
		msg: "image DIR: fdinfo-77.img: corrupt: pid 77 is not in pstree.img",
	}, {
		name: "fd refers to unknown file id",
		mutate: func(t *testing.T, dir string) {
			writeFile(t, dir, "fdinfo-12.img", frame(magicOf("fdinfo-12.img"), &imagepb.FdEntry{Fd: 3, FileId: 9}))
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: "image DIR: fdinfo-12.img: entry 0: corrupt: fd 3 file_id 9 is not an id of files.img",
	}, {
		name: "root not in pstree",
		mutate: func(t *testing.T, dir string) {
			resign(t, dir, func(inv *imagepb.Inventory) { inv.RootPid = 12 })
		},
		is:  ErrCorrupt,
		msg: "root pid 12 has ppid 10, want 0",
	}, {
		name: "overlapping vmas",
		mutate: func(t *testing.T, dir string) {
			mm := newSample().mms[10]
			mm.Vmas[1].Start = 0x402000
			writeFile(t, dir, "mm-10.img", frame(magicOf("mm-10.img"), mm))
			resign(t, dir, nil)
		},
		is:  ErrCorrupt,
		msg: "vma 1 [0x402000, 0x601000) is out of order or overlaps the one before",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := sampleImage(t)
			tc.mutate(t, dir)
			r, err := Open(dir)
			if err == nil {
				t.Fatalf("Open succeeded: %v", r.Inventory())
			}
			want := strings.ReplaceAll(tc.msg, "DIR", dir)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error\n got %v\nwant one containing %s", err, want)
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			var ie *Error
			if !errors.As(err, &ie) {
				t.Errorf("error %T is not an *Error", err)
			}
		})
	}
}

func removeSum(files []*imagepb.FileSum, name string) []*imagepb.FileSum {
	var out []*imagepb.FileSum
	for _, f := range files {
		if f.Name != name {
			out = append(out, f)
		}
	}
	return out
}

// TestReadRechecks shows typed readers re-verify what Open validated.
func TestReadRechecks(t *testing.T) {
	dir := sampleImage(t)
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "core-12.img"))
	b[len(b)-1] ^= 1
	writeFile(t, dir, "core-12.img", b)
	if _, err := r.Core(12); !errors.Is(err, ErrChecksum) {
		t.Errorf("Core after modification: %v, want ErrChecksum", err)
	}
	if err := os.Truncate(filepath.Join(dir, "pages-10.img"), PageSize); err != nil {
		t.Fatal(err)
	}
	if _, err := r.OpenPages("10"); !errors.Is(err, ErrChecksum) {
		t.Errorf("OpenPages after truncation: %v, want ErrChecksum", err)
	}
}

// TestDeferredPagesChecksum: with DeferPages, Open does not read the pages
// files' contents (a flipped byte passes Open, which plain Open refuses),
// and the Pages reader finds it: Verify after reading in order fails with
// ErrChecksum naming the file, a clean file verifies, and a read out of
// order makes Verify fail rather than pass unchecked bytes.
func TestDeferredPagesChecksum(t *testing.T) {
	dir := sampleImage(t)
	readAll := func(p *Pages, chunk int) {
		t.Helper()
		b := make([]byte, chunk)
		for off := int64(0); ; off += int64(chunk) {
			n, err := p.ReadAt(b, off)
			if n < chunk || err != nil {
				return
			}
		}
	}
	r, err := OpenWith(dir, OpenOptions{DeferPages: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.OpenPages("10")
	if err != nil {
		t.Fatal(err)
	}
	readAll(p, PageSize)
	if err := p.Verify(); err != nil {
		t.Errorf("clean pages file: Verify: %v", err)
	}
	p.Close()
	p, _ = r.OpenPages("10")
	b := make([]byte, PageSize)
	p.ReadAt(b, PageSize) // skips the first page
	if err := p.Verify(); err == nil || !strings.Contains(err.Error(), "out of order") {
		t.Errorf("read out of order: Verify: %v", err)
	}
	p.Close()

	path := filepath.Join(dir, "pages-10.img")
	data, _ := os.ReadFile(path)
	data[len(data)/2] ^= 0x40
	writeFile(t, dir, "pages-10.img", data)
	if _, err := Open(dir); !errors.Is(err, ErrChecksum) {
		t.Errorf("plain Open of a damaged pages file: %v, want ErrChecksum", err)
	}
	r, err = OpenWith(dir, OpenOptions{DeferPages: true})
	if err != nil {
		t.Fatalf("Open with DeferPages read the pages: %v", err)
	}
	for _, chunk := range []int{PageSize, 3 * PageSize, 1 << 20} {
		p, err := r.OpenPages("10")
		if err != nil {
			t.Fatal(err)
		}
		readAll(p, chunk)
		if err := p.Verify(); !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "pages-10.img") {
			t.Errorf("damaged pages read in %d-byte chunks: Verify: %v, want ErrChecksum naming pages-10.img", chunk, err)
		}
		p.Close()
	}
	// nothing read at all: Verify hashes the whole file itself
	p, _ = r.OpenPages("10")
	if err := p.Verify(); !errors.Is(err, ErrChecksum) {
		t.Errorf("damaged pages, nothing read: Verify: %v", err)
	}
	p.Close()
}

// TestDecodeLimits checks that a length prefix never causes an allocation
// beyond the bytes left in the file.
func TestDecodeLimits(t *testing.T) {
	k := kindByName(kindFiles)
	b := binary.LittleEndian.AppendUint32(append([]byte(nil), k.Magic[:]...), MaxEntrySize)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := decodeFile(strings.NewReader(string(b)), int64(len(b)), k, loc{file: "f"}, nil)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "exceeds the 0 bytes left") {
		t.Errorf("err = %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("decoding allocated %d bytes", n)
	}
}

func mkfifo(path string) error { return syscall.Mkfifo(path, 0o600) }

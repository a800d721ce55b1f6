package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// sample is the content of the image writeSample writes.
type sample struct {
	pstree []*imagepb.PstreeEntry
	cores  map[int]*imagepb.TaskCore
	mms    map[int]*imagepb.MmEntry
	files  []*imagepb.FileEntry
	fds    map[int][]*imagepb.FdEntry
	// pages maps a pages name to the runs given to WritePages, in order.
	pages map[string][]run
}

type run struct {
	vaddr uint64
	data  []byte
}

// pageData returns n pages filled with bytes derived from seed.
func pageData(n int, seed byte) []byte {
	b := make([]byte, n*PageSize)
	for i := range b {
		b[i] = seed + byte(i/PageSize)
	}
	return b
}

func newSample() *sample {
	return &sample{
		pstree: []*imagepb.PstreeEntry{
			{Pid: 10, Ppid: 0, Pgid: 10, Sid: 10, Threads: []int32{10, 11}, NsPid: []int32{10, 1}},
			{Pid: 12, Ppid: 10, Pgid: 10, Sid: 10, Threads: []int32{12}},
		},
		cores: map[int]*imagepb.TaskCore{
			10: {Pid: 10, Comm: "init", Umask: 0o22, Threads: []*imagepb.ThreadCore{
				{Tid: 10, Regs: bytes.Repeat([]byte{1}, 27*8), Comm: "init"},
				{Tid: 11, Regs: bytes.Repeat([]byte{2}, 27*8), Creds: &imagepb.Creds{Uids: []uint32{0, 0, 0, 0}}},
			}, Rlimits: []*imagepb.Rlimit{{Resource: 7, Cur: 1024, Max: 4096}}},
			12: {Pid: 12, Comm: "child", Cwd: "/tmp"},
		},
		mms: map[int]*imagepb.MmEntry{
			10: {ExeFileId: 1, Auxv: []byte{1, 2, 3}, Vmas: []*imagepb.Vma{
				{Start: 0x400000, End: 0x403000, Prot: 5, Kind: imagepb.VmaKind_VMA_FILE_PRIVATE, Name: "/bin/init", FileId: 1},
				{Start: 0x600000, End: 0x601000, Prot: 3, Kind: imagepb.VmaKind_VMA_ANON_PRIVATE},
				{Start: 0x700000, End: 0x702000, Prot: 3, Kind: imagepb.VmaKind_VMA_ANON_SHARED, ShmemId: 5},
			}},
			12: {},
		},
		files: []*imagepb.FileEntry{
			{Id: 1, Kind: imagepb.FileKind_FILE_REG, Path: "/bin/init", Mode: 0o100755, Size: 1234},
			{Id: 2, Kind: imagepb.FileKind_FILE_CHR, Path: "/dev/null", Flags: 2, Rdev: 0x103},
		},
		fds: map[int][]*imagepb.FdEntry{
			10: {{Fd: 0, FileId: 2}, {Fd: 1, FileId: 2, Cloexec: true}},
			12: nil,
		},
		pages: map[string][]run{
			// Two adjacent runs (merged), then one apart.
			"10": {{0x400000, pageData(2, 1)}, {0x402000, pageData(1, 3)}, {0x600000, pageData(1, 9)}},
			// Runs not in address order, not overlapping.
			"shmem-5": {{0x1000, pageData(1, 20)}, {0x0, pageData(1, 30)}},
			"12":      nil,
		},
	}
}

// write writes s as a complete image in dir.
func (s *sample) write(t testing.TB, dir string) {
	t.Helper()
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	check(w.WritePstree(s.pstree))
	for pid, c := range s.cores {
		check(w.WriteCore(pid, c))
	}
	for pid, m := range s.mms {
		check(w.WriteMm(pid, m))
	}
	check(w.WriteFiles(s.files))
	for pid, fds := range s.fds {
		check(w.WriteFdinfo(pid, fds))
	}
	for name, runs := range s.pages {
		p, err := w.CreatePages(name)
		check(err)
		for _, r := range runs {
			check(p.WritePages(r.vaddr, r.data))
		}
		check(p.Close())
	}
	check(w.Finish(&imagepb.Inventory{ToolVersion: "test", Kernel: "6.1", Arch: "amd64", RootPid: 10, XsaveFeatures: 0x207}))
}

func sampleImage(t testing.TB) string {
	dir := filepath.Join(t.TempDir(), "img")
	newSample().write(t, dir)
	return dir
}

// frame encodes a file without the writer's checks, for broken files.
func frame(m Magic, msgs ...proto.Message) []byte {
	b := append([]byte(nil), m[:]...)
	for _, msg := range msgs {
		e, err := proto.Marshal(msg)
		if err != nil {
			panic(err)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e)))
		b = append(b, e...)
	}
	return b
}

func magicOf(name string) Magic {
	m, err := MagicOf(name)
	if err != nil {
		panic(err)
	}
	return m
}

func readInv(t testing.TB, dir string) *imagepb.Inventory {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, InventoryName))
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := decodeFile(bytes.NewReader(b), int64(len(b)), kindByName(kindInventory), loc{file: "inv"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return msgs[0].(*imagepb.Inventory)
}

// resign rewrites inventory.img with fresh checksums of every listed file
// plus the files named in add, after edit (if non-nil) changed it.
func resign(t testing.TB, dir string, edit func(*imagepb.Inventory), add ...string) {
	t.Helper()
	inv := readInv(t, dir)
	for _, n := range add {
		inv.Files = append(inv.Files, &imagepb.FileSum{Name: n})
	}
	for _, f := range inv.Files {
		b, err := os.ReadFile(filepath.Join(dir, f.Name))
		if err != nil {
			continue // e.g. a test removed it
		}
		sum := sha256.Sum256(b)
		f.Size, f.Checksum, f.ChecksumAlgo = uint64(len(b)), sum[:], algoSHA256 // the older algorithm stays verified
	}
	if edit != nil {
		edit(inv)
	}
	writeFile(t, dir, InventoryName, frame(magicOf(InventoryName), inv))
}

func writeFile(t testing.TB, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

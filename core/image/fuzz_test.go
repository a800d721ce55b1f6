package image

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// entryKinds are the kinds FuzzDecodeEntries picks from with its kind byte.
func entryKinds() []*Kind {
	var out []*Kind
	for _, k := range kinds {
		if !k.Raw {
			out = append(out, k)
		}
	}
	return out
}

type decodeSeed struct {
	data []byte
	kind byte
}

// fuzzSeeds returns named seeds for FuzzDecodeEntries.
func fuzzSeeds() map[string]decodeSeed {
	ks := entryKinds()
	idx := func(name string) byte {
		for i, k := range ks {
			if k.Name == name {
				return byte(i)
			}
		}
		panic(name)
	}
	s := newSample()
	seeds := map[string]decodeSeed{}
	add := func(name, kind string, b []byte) { seeds[name] = decodeSeed{b, idx(kind)} }
	m := func(kind string) Magic { return kindByName(kind).Magic }
	add("inventory-valid", kindInventory, frame(m(kindInventory), &imagepb.Inventory{FormatVersion: 1, RootPid: 10,
		Files: []*imagepb.FileSum{{Name: "pstree.img", Size: 8, Checksum: make([]byte, 32)}}}))
	add("pstree-valid", kindPstree, frame(m(kindPstree), toMessages(s.pstree)...))
	add("core-valid", kindCore, frame(m(kindCore), s.cores[10]))
	add("core-two", kindCore, frame(m(kindCore), s.cores[10], s.cores[12]))
	add("mm-valid", kindMm, frame(m(kindMm), s.mms[10]))
	add("pagemap-valid", kindPagemap, frame(m(kindPagemap), &imagepb.PagemapHead{PagesFile: "pages-1.img", PageSize: PageSize},
		&imagepb.PagemapEntry{Vaddr: 0x1000, NrPages: 2}, &imagepb.PagemapEntry{Vaddr: 0x8000, NrPages: 1}))
	add("pagemap-overlap", kindPagemap, frame(m(kindPagemap), &imagepb.PagemapHead{PagesFile: "pages-1.img", PageSize: PageSize},
		&imagepb.PagemapEntry{Vaddr: 0x1000, NrPages: 2}, &imagepb.PagemapEntry{Vaddr: 0x2000, NrPages: 1}))
	add("files-valid", kindFiles, frame(m(kindFiles), toMessages(s.files)...))
	add("fdinfo-valid", kindFdinfo, frame(m(kindFdinfo), toMessages(s.fds[10])...))
	add("fdinfo-empty", kindFdinfo, frame(m(kindFdinfo)))
	add("files-hugelen", kindFiles, append(frame(m(kindFiles)), 0xff, 0xff, 0xff, 0xff, 1))
	trunc := frame(m(kindCore), s.cores[10])
	add("core-truncated", kindCore, trunc[:len(trunc)-5])
	add("fdinfo-badproto", kindFdinfo, append(frame(m(kindFdinfo)), 3, 0, 0, 0, 0x0a, 0xff, 0xff))
	return seeds
}

func FuzzDecodeEntries(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.data, s.kind)
	}
	ks := entryKinds()
	f.Fuzz(func(t *testing.T, data []byte, kind byte) {
		k := ks[int(kind)%len(ks)]
		l := loc{file: "fuzz"}
		msgs, err := decodeFile(bytes.NewReader(data), int64(len(data)), k, l, nil)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T is not an *Error: %v", err, err)
			}
			return
		}
		// Whatever decodes must pass the writer's checks, re-encode and
		// decode to the same messages.
		again, err := encodeFile(k, msgs)
		if err != nil {
			t.Fatalf("re-encoding: %v", err)
		}
		msgs2, err := decodeFile(bytes.NewReader(again), int64(len(again)), k, l, nil)
		if err != nil || len(msgs2) != len(msgs) {
			t.Fatalf("decoding the re-encoded file: %d entries, %v", len(msgs2), err)
		}
		for i := range msgs {
			if !proto.Equal(msgs[i], msgs2[i]) {
				t.Fatalf("entry %d changed: %v -> %v", i, msgs[i], msgs2[i])
			}
		}
		// The per-file content checks must not panic either.
		x := newRefIndex(&imagepb.Inventory{RootPid: 1})
		arg := "1"
		_ = x.add(l, k, arg, msgs)
		if k.Name == kindPagemap {
			for _, size := range []int64{0, PageSize, 3 * PageSize, int64(len(data)) * PageSize} {
				_, _, _ = checkPagemap(l, arg, msgs, size)
			}
		}
	})
}

// inventorySeeds returns named seeds for FuzzInventory.
func inventorySeeds() map[string][]byte {
	m := kindByName(kindInventory).Magic
	sum := make([]byte, 32)
	good := &imagepb.Inventory{FormatVersion: 1, ToolVersion: "t", Arch: "amd64", RootPid: 1, Files: []*imagepb.FileSum{
		{Name: "core-1.img", Size: 20, Checksum: sum},
		{Name: "pagemap-1.img", Size: 30, Checksum: sum},
		{Name: "pages-1.img", Size: 8192, Checksum: sum},
	}}
	v2 := proto.CloneOf(good)
	v2.FormatVersion = 3
	dup := proto.CloneOf(good)
	dup.Files = append(dup.Files, dup.Files[0])
	return map[string][]byte{
		"valid":       frame(m, good),
		"version3":    frame(m, v2),
		"duplicate":   frame(m, dup),
		"two-entries": frame(m, good, good),
		"bad-magic":   append([]byte("CRIU"), frame(m, good)[4:]...),
		"empty":       frame(m),
		"hugelen":     append(frame(m), 0xff, 0xff, 0xff, 0xff),
	}
}

func FuzzInventory(f *testing.F) {
	for _, s := range inventorySeeds() {
		f.Add(s)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		l := loc{dir, InventoryName}
		msgs, err := decodeFile(bytes.NewReader(data), int64(len(data)), kindByName(kindInventory), l, checkVersion(l))
		if err != nil {
			return
		}
		inv := msgs[0].(*imagepb.Inventory)
		if inv.FormatVersion < MinFormatVersion || inv.FormatVersion > FormatVersion {
			t.Fatalf("version %d accepted", inv.FormatVersion)
		}
		sums, err := checkFileList(l, inv)
		if err != nil {
			return
		}
		for name := range sums {
			if _, _, err := kindOf(name); err != nil || filepath.Base(name) != name {
				t.Fatalf("accepted file name %q", name)
			}
		}
		// Open on the real directory must fail cleanly: the listed files
		// are not there.
		if err := os.WriteFile(filepath.Join(dir, InventoryName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if r, err := Open(dir); err == nil && len(sums) > 0 {
			t.Fatalf("Open succeeded on %v", r.Inventory())
		}
	})
}

// TestFuzzSeeds checks that the checked-in seed corpus under testdata/fuzz
// is what the seed generators produce (so the fuzzers start from valid
// images of the current format); CTRCR_WRITE_FUZZ_SEEDS=1 rewrites it.
func TestFuzzSeeds(t *testing.T) {
	regenerate := os.Getenv("CTRCR_WRITE_FUZZ_SEEDS") == "1"
	write := func(fuzzer, name string, vals ...any) {
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, v := range vals {
			switch v := v.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			case byte:
				fmt.Fprintf(&b, "byte(%q)\n", v)
			default:
				t.Fatalf("type %T", v)
			}
		}
		d := filepath.Join("testdata", "fuzz", fuzzer)
		path := filepath.Join(d, "seed-"+name)
		if !regenerate {
			have, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(have, b.Bytes()) {
				t.Errorf("%s is missing or stale (err %v): run CTRCR_WRITE_FUZZ_SEEDS=1 go test -run TestFuzzSeeds ./core/image/", path, err)
			}
			return
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, s := range fuzzSeeds() {
		write("FuzzDecodeEntries", name, s.data, s.kind)
	}
	for name, data := range inventorySeeds() {
		write("FuzzInventory", name, data)
	}
}

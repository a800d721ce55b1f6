package procfs

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

func auxvBytes(words ...uint64) []byte {
	b := make([]byte, 8*len(words))
	for i, w := range words {
		binary.NativeEndian.PutUint64(b[8*i:], w)
	}
	return b
}

func TestDecodeAuxv(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want []AuxvEntry
	}{
		{"empty (kernel thread)", nil, nil},
		{"only AT_NULL", auxvBytes(0, 0), nil},
		{"pairs", auxvBytes(6, 4096, 25, 0x7fff1d1791c9, 0, 0), []AuxvEntry{{6, 4096}, {25, 0x7fff1d1791c9}}},
		{"bytes after AT_NULL ignored", append(auxvBytes(6, 4096, 0, 0), 1, 2, 3), []AuxvEntry{{6, 4096}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeAuxv(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	for _, in := range [][]byte{
		{1},
		auxvBytes(6),
		auxvBytes(6, 4096),
		append(auxvBytes(6, 4096), 0, 0, 0, 0, 0, 0, 0, 0),
	} {
		_, err := DecodeAuxv(in)
		wantMalformed(t, err)
	}
}

func TestDecodeAuxvFixture(t *testing.T) {
	raw := []byte(fixture(t, "auxv.bin")) // /proc/self/auxv of cat(1)
	got, err := DecodeAuxv(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(raw)/16-1 {
		t.Fatalf("%d entries from %d bytes", len(got), len(raw))
	}
	m := map[uint64]uint64{}
	for _, e := range got {
		m[e.Type] = e.Value
	}
	// AT_SYSINFO_EHDR(33), AT_PAGESZ(6), AT_RANDOM(25), AT_EXECFN(31).
	if m[33] == 0 || m[6] != 4096 || m[25] == 0 || m[31] == 0 {
		t.Errorf("unexpected auxv %v", got)
	}
}

func TestParsePersonality(t *testing.T) {
	for in, want := range map[string]uint32{
		"00000000\n": 0,
		"00400000\n": 0x400000, // READ_IMPLIES_EXEC
		"0040000a":   0x40000a,
		"ffffffff\n": 0xffffffff,
	} {
		got, err := ParsePersonality(strings.NewReader(in))
		if err != nil || got != want {
			t.Errorf("%q: got %#x, %v; want %#x", in, got, err, want)
		}
	}
	for _, in := range []string{"", "\n", "x\n", "100000000\n", "0 \n", "00000000\n\n"} {
		_, err := ParsePersonality(strings.NewReader(in))
		wantMalformed(t, err)
	}
}

func TestParseComm(t *testing.T) {
	for in, want := range map[string]string{
		"cat\n":           "cat",
		"a) (b) c\n":      "a) (b) c",
		"a\\b\nc\td\"e\n": "a\\b\nc\td\"e", // raw, unlike status Name
		"\n":              "",
		" x \n\n":         " x \n",
	} {
		got, err := parseComm(strings.NewReader(in))
		if err != nil || got != want {
			t.Errorf("%q: got %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "cat"} {
		_, err := parseComm(strings.NewReader(in))
		wantMalformed(t, err)
	}
}

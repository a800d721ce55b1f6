package procfs

import (
	"bytes"
	"strings"
	"testing"
)

// Seeds live in testdata/fuzz/<FuzzName>/ as well; run with e.g.
//
//	go test -run '^$' -fuzz '^FuzzParseMaps$' -fuzztime 30s ./core/procfs

func FuzzParseMaps(f *testing.F) {
	f.Add([]byte(fixture(f, "maps.txt")))
	f.Add([]byte("7fa9d509d000-7fa9d509f000 rw-s 00000000 fe:00 9977951 /tmp/a file (x) (deleted)\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		vmas, err := ParseMaps(bytes.NewReader(in))
		if err != nil {
			return
		}
		for _, v := range vmas {
			if v.End <= v.Start || len(v.Perms) != 4 || v.Prot&^7 != 0 ||
				v.Shared != (v.Perms[3] == 's') || strings.HasPrefix(v.Path, " ") {
				t.Fatalf("inconsistent VMA %+v from %q", v, in)
			}
		}
		// The smaps parser shares the header code: every maps line is a
		// valid smaps header.
		_, _ = ParseSmaps(bytes.NewReader(in))
	})
}

func FuzzParseStatus(f *testing.F) {
	f.Add([]byte(fixture(f, "status.txt")))
	f.Add([]byte(fixture(f, "status_zombie.txt")))
	f.Add([]byte(minimalStatus))
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := ParseStatus(bytes.NewReader(in))
		if err != nil {
			return
		}
		for _, k := range statusRequired {
			if !s.Has(k) {
				t.Fatalf("accepted input without %q: %q", k, in)
			}
		}
	})
}

// FuzzOtherParsers feeds the same input to the remaining parsers; it only
// checks that they do not panic or hang.
func FuzzOtherParsers(f *testing.F) {
	for _, name := range []string{"stat.txt", "limits.txt", "timers.txt", "fdinfo_timerfd.txt", "auxv.bin"} {
		f.Add([]byte(fixture(f, name)))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		_, _ = ParseStat(bytes.NewReader(in))
		_, _ = ParseLimits(bytes.NewReader(in))
		_, _ = ParseTimers(bytes.NewReader(in))
		_, _ = ParseFdInfo(bytes.NewReader(in))
		_, _ = ParsePersonality(bytes.NewReader(in))
		_, _ = parseComm(bytes.NewReader(in))
		_, _ = DecodeAuxv(in)
		_, _ = ParseSmaps(bytes.NewReader(in))
	})
}

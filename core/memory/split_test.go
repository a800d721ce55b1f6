package memory

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// SplitRuns: each run's parts go to in or out by address with their file
// offsets, skip drops parts, and parts that continue each other in memory
// and in the file are one.
func TestSplitRuns(t *testing.T) {
	const pg = PageSize
	runs := []*imagepb.PagemapEntry{{Vaddr: 0, NrPages: 4}, {Vaddr: 10 * pg, NrPages: 2}, {Vaddr: 12 * pg, NrPages: 3}}
	in := Spans{{1 * pg, 3 * pg}, {10 * pg, 20 * pg}}
	skip := Spans{{13 * pg, 14 * pg}}
	gotIn, gotOut := SplitRuns(runs, in, skip)
	wantIn := []PagePart{{1 * pg, 1 * pg, 2 * pg}, {10 * pg, 4 * pg, 3 * pg}, {14 * pg, 8 * pg, 1 * pg}}
	wantOut := []PagePart{{0, 0, pg}, {3 * pg, 3 * pg, pg}}
	if !reflect.DeepEqual(gotIn, wantIn) || !reflect.DeepEqual(gotOut, wantOut) {
		t.Fatalf("in %+v out %+v\nwant in %+v out %+v", gotIn, gotOut, wantIn, wantOut)
	}
	if in, out := SplitRuns(runs, nil, nil); len(in) != 0 || len(out) != 2 || out[1] != (PagePart{10 * pg, 4 * pg, 5 * pg}) {
		t.Fatalf("no spans: in %+v out %+v", in, out)
	}
}

// FillParts writes every part's bytes from its offset.
func TestFillParts(t *testing.T) {
	const pg = PageSize
	file := make([]byte, 4*pg)
	for i := range 4 {
		file[i*pg] = byte(i + 1)
	}
	dst := make(sliceAt, 16*pg)
	n, err := FillParts(dst, []PagePart{{8 * pg, 2 * pg, 2 * pg}, {pg, 0, pg}}, bytes.NewReader(file))
	if err != nil || n != 3 {
		t.Fatalf("n %d err %v", n, err)
	}
	if dst[8*pg] != 3 || dst[9*pg] != 4 || dst[pg] != 1 || dst[0] != 0 {
		t.Fatalf("wrong bytes: %d %d %d %d", dst[8*pg], dst[9*pg], dst[pg], dst[0])
	}
	if _, err := FillParts(dst, []PagePart{{0, 3 * pg, 2 * pg}}, bytes.NewReader(file)); err == nil {
		t.Fatal("a part beyond the file read without an error")
	}
}

type sliceAt []byte

func (s sliceAt) WriteAt(b []byte, off int64) (int, error) { return copy(s[off:], b), nil }

// TakeTail takes whole pages off the end, cutting a part when needed.
func TestTakeTail(t *testing.T) {
	const pg = PageSize
	parts := []PagePart{{0, 0, 4 * pg}, {100 * pg, 4 * pg, 2 * pg}}
	rest, tail := TakeTail(parts, 3*pg+100)
	wantRest := []PagePart{{0, 0, 3 * pg}}
	wantTail := []PagePart{{3 * pg, 3 * pg, pg}, {100 * pg, 4 * pg, 2 * pg}}
	if !reflect.DeepEqual(rest, wantRest) || !reflect.DeepEqual(tail, wantTail) {
		t.Fatalf("rest %+v tail %+v", rest, tail)
	}
	if parts[0].Len != 4*pg {
		t.Fatal("TakeTail changed its argument")
	}
	if rest, tail := TakeTail(parts, 100*pg); len(rest) != 0 || len(tail) != 2 {
		t.Fatalf("all: rest %+v tail %+v", rest, tail)
	}
}

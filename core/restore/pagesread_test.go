package restore

import (
	"reflect"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/memory"
)

// parseWritable keeps the writable private mappings, merged.
func TestParseWritable(t *testing.T) {
	maps := `55d0a0000000-55d0a0001000 r--p 00000000 08:01 123 /bin/x
55d0a0001000-55d0a0003000 rw-p 00001000 08:01 123 /bin/x
55d0a0003000-55d0a0004000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000001000 rw-s 00000000 00:01 9 /dev/zero (deleted)
7f0000002000-7f0000003000 ---p 00000000 00:00 0
7ffd00000000-7ffd00002000 rwxp 00000000 00:00 0 [stack]
`
	got, err := parseWritable(maps)
	if err != nil {
		t.Fatal(err)
	}
	want := memory.Spans{{Start: 0x55d0a0001000, End: 0x55d0a0004000}, {Start: 0x7ffd00000000, End: 0x7ffd00002000}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v, want %#v", got, want)
	}
	if _, err := parseWritable("zz-1 rw-p 0 0 0\n"); err == nil {
		t.Fatal("a bad line parsed")
	}
}

// checkReads accepts only whole reads and names a short one.
func TestCheckReads(t *testing.T) {
	reads := []taskRead{{addr: 0x1000, n: 8192}, {addr: 0x9000, n: 4096, off: 8192}}
	if n, err := checkReads([]uint64{8192, 4096, 0}, reads); err != nil || n != 3 {
		t.Fatalf("n %d err %v", n, err)
	}
	_, err := checkReads([]uint64{8192, 100, 0}, reads)
	if err == nil || !strings.Contains(err.Error(), "0x9000") {
		t.Fatalf("short read: %v", err)
	}
}

// shareParts leaves small fills to the task, gives ctr-cr at most its
// share of a big one, only in stable spans, and the task the rest in file
// order.
func TestShareParts(t *testing.T) {
	const mib = 1 << 20
	small := []memory.PagePart{{Addr: 0x10000000, Off: 0, Len: mib}}
	if task, ours := shareParts(small, memory.Spans{{Start: 0, End: 1 << 40}}); len(ours) != 0 || len(task) != 1 {
		t.Fatalf("small: task %+v ours %+v", task, ours)
	}
	big := []memory.PagePart{{Addr: 0x10000000, Off: 0, Len: 64 * mib}, {Addr: 0x40000000, Off: 64 * mib, Len: 36 * mib}}
	// the second part's VMA is unsettled: ctr-cr's share comes from the first
	stable := memory.Spans{{Start: 0x10000000, End: 0x10000000 + 64*mib}}
	task, ours := shareParts(big, stable)
	var t1, o1 uint64
	for _, p := range task {
		t1 += p.Len
	}
	for _, p := range ours {
		o1 += p.Len
		if p.Addr < 0x10000000 || p.Addr+p.Len > 0x10000000+64*mib {
			t.Fatalf("ours outside the stable span: %+v", p)
		}
	}
	if o1 != 40*mib || t1 != 60*mib {
		t.Fatalf("task %d bytes, ours %d: want 60 and 40 MiB", t1, o1)
	}
	for i := 1; i < len(task); i++ {
		if task[i].Off < task[i-1].Off {
			t.Fatalf("task parts out of file order: %+v", task)
		}
	}
}

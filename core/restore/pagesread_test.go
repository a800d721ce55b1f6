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

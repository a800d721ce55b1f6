package writeback

import (
	"errors"
	"testing"
)

// recorder records the size of each write; it fails the write that
// would take it past limit, after writing what fits.
type recorder struct {
	sizes []int
	total int
	limit int
}

func (r *recorder) Write(b []byte) (int, error) {
	r.sizes = append(r.sizes, len(b))
	if r.total+len(b) > r.limit {
		k := r.limit - r.total
		r.total = r.limit
		return k, errors.New("full")
	}
	r.total += len(b)
	return len(b), nil
}

func TestWriteSplits(t *testing.T) {
	r := &recorder{limit: 1 << 30}
	b := make([]byte, 2*WriteMax+100)
	if n, err := Write(r, b); err != nil || n != len(b) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(b))
	}
	if len(r.sizes) != 3 || r.sizes[0] != WriteMax || r.sizes[1] != WriteMax || r.sizes[2] != 100 {
		t.Fatalf("write sizes %v, want [%d %d 100]", r.sizes, WriteMax, WriteMax)
	}
}

func TestWriteShortOnError(t *testing.T) {
	r := &recorder{limit: WriteMax + 10}
	n, err := Write(r, make([]byte, 3*WriteMax))
	if err == nil || n != WriteMax+10 {
		t.Fatalf("Write = %d, %v; want %d and the writer's error", n, err, WriteMax+10)
	}
}

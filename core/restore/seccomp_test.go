package restore

import (
	"testing"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

func TestSharedSeccompPrefix(t *testing.T) {
	f := func(b byte) *imagepb.SeccompFilter {
		return &imagepb.SeccompFilter{Bpf: []byte{b, 0, 0, 0, 0, 0, 0, 0}}
	}
	th := func(fs ...*imagepb.SeccompFilter) *imagepb.ThreadCore { return &imagepb.ThreadCore{Seccomp: fs} }
	for _, c := range []struct {
		name    string
		threads []*imagepb.ThreadCore
		want    int
	}{
		{"single", []*imagepb.ThreadCore{th(f(1), f(2))}, 2},
		{"tsync plus own", []*imagepb.ThreadCore{th(f(1)), th(f(1), f(2)), th(f(1))}, 1},
		{"unfiltered thread ignored", []*imagepb.ThreadCore{th(f(1), f(2)), th(), th(f(1), f(2))}, 2},
		{"leader unfiltered", []*imagepb.ThreadCore{th(), th(f(1))}, 0},
		{"different", []*imagepb.ThreadCore{th(f(1)), th(f(3))}, 0},
		{"none", nil, 0},
	} {
		if got := sharedSeccompPrefix(c.threads); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}

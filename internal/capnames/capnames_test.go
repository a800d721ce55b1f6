package capnames

import (
	"slices"
	"testing"
)

func TestMask(t *testing.T) {
	for _, c := range []struct {
		names []string
		want  uint64
		err   bool
	}{
		{nil, 0, false},
		{[]string{"CAP_CHOWN"}, 1, false},
		{[]string{"CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"}, 0x20000420, false},
		{[]string{"CAP_CHECKPOINT_RESTORE"}, 1 << 40, false},
		{[]string{"CAP_KILL", "CAP_NOPE"}, 0, true},
		{[]string{"cap_kill"}, 0, true},
	} {
		got, err := Mask(c.names)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("Mask(%v) = %#x, %v; want %#x, error %v", c.names, got, err, c.want, c.err)
		}
	}
	if got := FromMask(0x20000420); !slices.Equal(got, []string{"CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"}) {
		t.Errorf("FromMask = %v", got)
	}
	if len(Names) != 41 {
		t.Errorf("%d names, want 41 (CAP_CHOWN..CAP_CHECKPOINT_RESTORE)", len(Names))
	}
}

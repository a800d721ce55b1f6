package procfs

import "testing"

func TestParseAutogroup(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Autogroup
		ok   bool
	}{
		{"/autogroup-37017 nice 0\n", Autogroup{Own: true}, true},
		{"/autogroup-5 nice -7\n", Autogroup{Own: true, Nice: -7}, true},
		{"", Autogroup{}, true}, // the default autogroup (init's, pid 1's)
		{"\n", Autogroup{}, true},
		{"/autogroup-5 nice\n", Autogroup{}, false},
		{"/autogroup-5 nice 40\n", Autogroup{}, false},
		{"/autogroup-5 nice x\n", Autogroup{}, false},
		{"garbage here now\n", Autogroup{}, false},
	} {
		got, ok := ParseAutogroup([]byte(c.in))
		if got != c.want || ok != c.ok {
			t.Errorf("ParseAutogroup(%q) = %+v, %v; want %+v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

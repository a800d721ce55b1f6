package procfs

import (
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseLimitsFixture(t *testing.T) {
	const inf = unix.RLIM_INFINITY
	got, err := ParseLimits(strings.NewReader(fixture(t, "limits.txt")))
	if err != nil {
		t.Fatal(err)
	}
	want := []Limit{
		{unix.RLIMIT_CPU, inf, inf},
		{unix.RLIMIT_FSIZE, inf, inf},
		{unix.RLIMIT_DATA, inf, inf},
		{unix.RLIMIT_STACK, 8388608, inf},
		{unix.RLIMIT_CORE, 0, inf},
		{unix.RLIMIT_RSS, inf, inf},
		{unix.RLIMIT_NPROC, 96364, 96364},
		{unix.RLIMIT_NOFILE, 20000, 20000},
		{unix.RLIMIT_MEMLOCK, 8388608, 8388608},
		{unix.RLIMIT_AS, inf, inf},
		{unix.RLIMIT_LOCKS, inf, inf},
		{unix.RLIMIT_SIGPENDING, 96364, 96364},
		{unix.RLIMIT_MSGQUEUE, 819200, 819200},
		{unix.RLIMIT_NICE, 0, 0},
		{unix.RLIMIT_RTPRIO, 0, 0},
		{unix.RLIMIT_RTTIME, inf, inf},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
	for i, l := range got {
		if l.Resource != i {
			t.Errorf("row %d has resource %d", i, l.Resource)
		}
	}
}

func TestParseLimits(t *testing.T) {
	const hdr = "Limit                     Soft Limit           Hard Limit           Units     \n"
	tests := []struct {
		name string
		in   string
		want []Limit
	}{
		{"header only", hdr, nil},
		{"empty units column, no trailing spaces",
			hdr + "Max nice priority         0                    40", []Limit{{unix.RLIMIT_NICE, 0, 40}}},
		{"max values",
			hdr + "Max file size             18446744073709551614 unlimited            bytes     \n",
			[]Limit{{unix.RLIMIT_FSIZE, 18446744073709551614, unix.RLIM_INFINITY}}},
		{"rows in any order, blank line",
			hdr + "Max realtime timeout      unlimited            unlimited            us        \n\n" +
				"Max cpu time              10                   20                   seconds   \n",
			[]Limit{{unix.RLIMIT_RTTIME, unix.RLIM_INFINITY, unix.RLIM_INFINITY}, {unix.RLIMIT_CPU, 10, 20}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLimits(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
		})
	}

	for _, in := range []string{
		"",
		"Max cpu time              unlimited            unlimited            seconds   \n",
		hdr + "Max cpu time              unlimited\n",
		hdr + "Max cpu time              1 2 seconds extra\n",
		hdr + "Max cpu time              -1                   unlimited            seconds   \n",
		hdr + "Max cpu time              unlimited            infinite             seconds   \n",
		hdr + "Max cpu time              18446744073709551616 unlimited            seconds   \n",
		hdr + "Max fun                   1                    1                    \n",
		hdr + "Max cpu time              1                    1                    seconds   \n" +
			"Max cpu time              1                    1                    seconds   \n",
		hdr + "Max cpu timeout           1                    1                    seconds   \n",
	} {
		_, err := ParseLimits(strings.NewReader(in))
		wantMalformed(t, err)
	}
}

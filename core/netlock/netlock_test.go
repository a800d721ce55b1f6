package netlock

import (
	"errors"
	"net/netip"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

func TestRuleset(t *testing.T) {
	name := Prefix + "0123456789abcdef"
	for _, tc := range []struct {
		name  string
		conns []Conn
		want  []string
		err   string
	}{
		{"ipv4", []Conn{{netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.2:80")}},
			[]string{
				"ip saddr 127.0.0.1 ip daddr 127.0.0.2 tcp sport 40000 tcp dport 80 drop",
				"ip saddr 127.0.0.2 ip daddr 127.0.0.1 tcp sport 80 tcp dport 40000 drop",
				"type filter hook input priority -300", "type filter hook output priority -300",
			}, ""},
		{"ipv6", []Conn{{netip.MustParseAddrPort("[::1]:5"), netip.MustParseAddrPort("[fe80::1]:6")}},
			[]string{"ip6 saddr ::1 ip6 daddr fe80::1 tcp sport 5 tcp dport 6 drop", "ip6 saddr fe80::1 ip6 daddr ::1 tcp sport 6 tcp dport 5 drop"}, ""},
		{"mapped", []Conn{{netip.MustParseAddrPort("[::ffff:10.0.0.1]:5"), netip.MustParseAddrPort("[::ffff:10.0.0.2]:6")}},
			[]string{"ip saddr 10.0.0.1 ip daddr 10.0.0.2 tcp sport 5 tcp dport 6 drop"}, ""},
		{"mixed", []Conn{{netip.MustParseAddrPort("[::1]:5"), netip.MustParseAddrPort("10.0.0.2:6")}}, nil, "bad addresses"},
		{"invalid", []Conn{{}}, nil, "bad addresses"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Ruleset(name, tc.conns)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if strings.Count(got, w) != strings.Count(got, "chain ") && strings.Contains(w, "drop") {
					t.Errorf("rule %q not in both chains:\n%s", w, got)
				}
				if !strings.Contains(got, w) {
					t.Errorf("ruleset lacks %q:\n%s", w, got)
				}
			}
		})
	}
	if _, err := Ruleset("filter", nil); err == nil {
		t.Error("a table name not made by NewName was accepted")
	}
	if !ValidName(NewName()) || ValidName(Prefix+"x; flush ruleset") {
		t.Error("ValidName")
	}
}

// TestLockUnlock locks a connection in a fresh network namespace, checks
// that the table is there and that the host's namespace has none, then
// unlocks (twice: the second is a no-op).
func TestLockUnlock(t *testing.T) {
	testutil.RequiresRoot(t)
	ns := testutil.NewNetns(t)
	errc := make(chan error, 1)
	var inside, after []string
	go func() {
		// this thread never returns to the pool: it ends with the goroutine
		runtime.LockOSThread()
		fd, err := unix.Open(ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
		}
		if err != nil {
			errc <- err
			return
		}
		name := NewName()
		if err := Lock(name, []Conn{{netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2")}}); err != nil {
			errc <- err
			return
		}
		if err := Lock(name, nil); err == nil {
			errc <- errors.New("a second lock with the same name was accepted")
			return
		}
		inside, _ = Tables()
		if err := Unlock(name); err != nil {
			errc <- err
			return
		}
		if err := Unlock(name); err != nil {
			errc <- err
			return
		}
		after, err = Tables()
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if len(inside) != 1 || len(after) != 0 {
		t.Fatalf("tables while locked %v, after unlock %v", inside, after)
	}
}

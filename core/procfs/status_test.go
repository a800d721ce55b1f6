package procfs

import (
	"reflect"
	"strings"
	"testing"
)

// minimalStatus has exactly the mandatory lines.
const minimalStatus = "Name:\tx\nState:\tS (sleeping)\nTgid:\t5\nPid:\t6\nPPid:\t1\n" +
	"Uid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t \nThreads:\t1\nSigQ:\t0/10\n" +
	"SigPnd:\t0\nShdPnd:\t0\nSigBlk:\t0\nSigIgn:\t0\nSigCgt:\t0\n" +
	"CapInh:\t0\nCapPrm:\t0\nCapEff:\t0\nCapBnd:\t0\nCapAmb:\t0\nNoNewPrivs:\t0\n"

func TestParseStatusFull(t *testing.T) {
	s, err := ParseStatus(strings.NewReader(fixture(t, "status.txt")))
	if err != nil {
		t.Fatal(err)
	}
	other := s.Other
	s.Other, s.seen = nil, nil
	want := Status{
		Name: "cap", Umask: 0o027, State: 'R', Tgid: 3694, Pid: 3694, PPid: 3684,
		Groups: []uint32{}, NStgid: []int{3694}, NSpid: []int{3694},
		NSpgid: []int{3684}, NSsid: []int{2961}, Threads: 1,
		SigQ: SigQueue{Queued: 4, Limit: 96364}, SigBlk: 0x4200, SigIgn: 3,
		CapPrm: 0x1fffeffffff, CapEff: 0x1fffeffffff, CapBnd: 0x1fffeffffff,
		THPEnabled: true,
	}
	if !reflect.DeepEqual(*s, want) {
		t.Errorf("got  %+v\nwant %+v", *s, want)
	}
	if other["VmLck"] != "4 kB" || other["Cpus_allowed_list"] != "0-1" || other["untag_mask"] != "0xffffffffffffffff" {
		t.Errorf("Other = %q", other)
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		check func(*Status) bool
	}{
		{"groups, seccomp filter, THP disabled", fixture(t, "status_seccomp.txt"), func(s *Status) bool {
			return s.Name == "a) (b) c" && reflect.DeepEqual(s.Groups, []uint32{10, 27, 1000}) &&
				s.NoNewPrivs && s.Seccomp == 2 && s.SeccompFilters == 2 && !s.THPEnabled &&
				s.Threads == 2 && s.SigCgt == 1<<32 && s.Has("THP_enabled")
		}},
		{"non-leader thread", fixture(t, "status_thread.txt"), func(s *Status) bool {
			return s.Name == "worker 1)" && s.Tgid == 4695 && s.Pid == 4696 && s.State == 'S' &&
				reflect.DeepEqual(s.NStgid, []int{4695}) && reflect.DeepEqual(s.NSpid, []int{4696}) &&
				!s.NoNewPrivs && s.Seccomp == 0
		}},
		{"nested pid namespace", fixture(t, "status_pidns.txt"), func(s *Status) bool {
			return reflect.DeepEqual(s.NStgid, []int{4622, 1}) && reflect.DeepEqual(s.NSpid, []int{4622, 1}) &&
				reflect.DeepEqual(s.NSpgid, []int{4609, 0}) && reflect.DeepEqual(s.NSsid, []int{2961, 0})
		}},
		{"zombie lacks Umask and THP_enabled", fixture(t, "status_zombie.txt"), func(s *Status) bool {
			return s.State == 'Z' && !s.Has("Umask") && !s.Has("THP_enabled") && !s.Has("VmRSS") &&
				s.Has("SigQ") && s.Has("NStgid") && s.Umask == 0
		}},
		{"minimal", minimalStatus, func(s *Status) bool {
			return s.Uid == [4]uint32{1, 2, 3, 4} && s.Gid == [4]uint32{5, 6, 7, 8} &&
				len(s.Groups) == 0 && s.NStgid == nil && !s.Has("Seccomp") && len(s.Other) == 0
		}},
		// Real escaping seen for comm "a\\b\nc\td\"e" (prctl PR_SET_NAME).
		{"escaped name", strings.Replace(minimalStatus, "Name:\tx", "Name:\ta\\\\b\\nc\td\"e", 1), func(s *Status) bool {
			return s.Name == "a\\b\nc\td\"e"
		}},
		{"name with leading/trailing blanks", strings.Replace(minimalStatus, "Name:\tx", "Name:\t x \t", 1), func(s *Status) bool {
			return s.Name == " x \t"
		}},
		{"all-ones masks", strings.Replace(minimalStatus, "SigBlk:\t0", "SigBlk:\tffffffffffffffff", 1), func(s *Status) bool {
			return s.SigBlk == ^uint64(0)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseStatus(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(s) {
				t.Errorf("unexpected %+v", *s)
			}
		})
	}
}

func TestParseStatusMalformed(t *testing.T) {
	repl := func(old, new string) string {
		if !strings.Contains(minimalStatus, old) {
			t.Fatalf("%q not in minimalStatus", old)
		}
		return strings.Replace(minimalStatus, old, new, 1)
	}
	for _, in := range []string{
		"",
		"Name:\tx\n",
		repl("Tgid:\t5\n", ""),
		repl("CapAmb:\t0\n", ""),
		repl("Pid:\t6", "Pid:\t6\nPid:\t6"),
		repl("Pid:\t6", "Pid 6"),
		repl("Pid:\t6", ":\t6"),
		repl("Pid:\t6", "Pid:\tsix"),
		repl("State:\tS (sleeping)", "State:\t"),
		repl("Uid:\t1\t2\t3\t4", "Uid:\t1\t2\t3"),
		repl("Gid:\t5\t6\t7\t8", "Gid:\t5\t6\t7\t-8"),
		repl("Groups:\t ", "Groups:\t1 x"),
		repl("SigQ:\t0/10", "SigQ:\t0"),
		repl("SigQ:\t0/10", "SigQ:\t0/"),
		repl("SigBlk:\t0", "SigBlk:\t0000000000000000g"),
		repl("CapEff:\t0", "CapEff:\t1ffffffffffffffff"),
		repl("NoNewPrivs:\t0", "NoNewPrivs:\t2"),
		minimalStatus + "Umask:\t0089\n",
		minimalStatus + "NStgid:\t\n",
		minimalStatus + "NSpid:\t1 b\n",
		minimalStatus + "Seccomp:\tfilter\n",
		minimalStatus + "THP_enabled:\tyes\n",
		minimalStatus + "Seccomp_filters:\t-\n",
		minimalStatus + "TracerPid:\t\n",
	} {
		_, err := ParseStatus(strings.NewReader(in))
		wantMalformed(t, err)
	}
}

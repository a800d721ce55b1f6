package procfs

import (
	"strings"
	"testing"
)

func TestParseStatFull(t *testing.T) {
	got, err := ParseStat(strings.NewReader(fixture(t, "stat.txt")))
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{
		Pid: 3694, Comm: "cap", State: 'R', PPid: 3684, Pgrp: 3684, Session: 2961,
		TtyNr: 0, Tpgid: -1, Flags: 4194304, MinFlt: 104, Priority: 20,
		NumThreads: 1, StartTime: 23522, VSize: 2576384, Rss: 313,
		RssLim: 18446744073709551615, StartCode: 94583186989056,
		EndCode: 94583186991493, StartStack: 140726902192720,
		Blocked: 0x4200, SigIgnore: 3, ExitSignal: 17, Processor: 1,
		StartData: 94583187000784, EndData: 94583187001632,
		StartBrk: 94583981477888, ArgStart: 140726902200851,
		ArgEnd: 140726902200857, EnvStart: 140726902200857,
		EnvEnd: 140726902202354,
	}
	if *got != want {
		t.Errorf("got  %+v\nwant %+v", *got, want)
	}
}

func TestParseStat(t *testing.T) {
	// Tail of a real line (fields 3..52), for synthetic comm tests.
	const tail = " R 4868 4868 2961 0 -1 4194304 1 0 0 0 0 0 0 0 20 0 1 0 33229 10928128 338 18446744073709551615 94890749198336 94890749199621 140728319049408 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 94890749210064 94890749210752 94890839191552 140728319056400 140728319056407 140728319056407 140728319057905 0\n"
	tests := []struct {
		name  string
		in    string
		check func(*Stat) bool
	}{
		{"comm with spaces and parens", fixture(t, "stat_paren.txt"), func(s *Stat) bool {
			return s.Pid == 4695 && s.Comm == "a) (b) c" && s.State == 'R' && s.NumThreads == 2 &&
				s.StartCode == 94890749198336 && s.EnvEnd == 140728319057905
		}},
		{"non-leader thread", fixture(t, "stat_thread.txt"), func(s *Stat) bool {
			return s.Pid == 4696 && s.Comm == "worker 1)" && s.State == 'S' && s.ExitSignal == -1
		}},
		{"zombie: mm fields zero, exit_code set", fixture(t, "stat_zombie.txt"), func(s *Stat) bool {
			return s.Comm == "z" && s.State == 'Z' && s.StartCode == 0 && s.EnvEnd == 0 && s.ExitCode == 768
		}},
		{"kernel thread", "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 22 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n", func(s *Stat) bool {
			return s.Pid == 2 && s.PPid == 0 && s.SigIgnore == 2147483647 && s.Processor == 1
		}},
		{"raw newline, backslash, tab in comm", "4870 (a\\b\nc\td\"e)" + tail, func(s *Stat) bool {
			return s.Pid == 4870 && s.Comm == "a\\b\nc\td\"e" && s.PPid == 4868
		}},
		{"empty comm", "1 ()" + tail, func(s *Stat) bool { return s.Comm == "" }},
		{"extra trailing fields ignored", "1 (x)" + strings.TrimSuffix(tail, "\n") + " 7 8\n", func(s *Stat) bool { return s.ExitCode == 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseStat(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(s) {
				t.Errorf("unexpected %+v", *s)
			}
		})
	}

	bad := []string{
		"",
		"1 x R 0\n",
		"(x)" + tail,
		"x (x)" + tail,
		"1 (x" + tail,
		"1(x)" + tail,
		"1 (x) R 1 2 3\n",
		"1 (x) RR" + tail[2:],
		"1 (x)" + strings.Replace(tail, " 4868 ", " x ", 1),
		"1 (x)" + strings.Replace(tail, " 18446744073709551615 ", " 18446744073709551616 ", 1),
		"1 (x)" + strings.Replace(tail, " 4194304 ", " -1 ", 1),
		"1 (x)" + strings.Repeat(" ", maxSmallFile) + tail,
	}
	for _, in := range bad {
		_, err := ParseStat(strings.NewReader(in))
		wantMalformed(t, err)
	}
}

package procfs

import (
	"bytes"
	"io"
	"strconv"
	"strings"
)

// Stat is /proc/<pid>/stat (or /proc/<pid>/task/<tid>/stat). Every field
// of the 52 that Linux >= 3.5 prints is parsed; the comment gives the
// proc(5) name and 1-based field number.
//
// Format notes:
//   - Comm is printed raw (no escaping) inside "(...)" and may contain
//     spaces, ')' and even '\n'; the parser splits at the LAST ')'.
//   - The mm fields startcode, endcode, startstack (26-28) read as 1, and
//     45-51 as 0, when the reader lacks PTRACE_MODE_READ on the target;
//     all are 0 for zombies and kernel threads. kstkesp/kstkeip are 0
//     unless the task is dumping core.
//   - Non-leader threads have ExitSignal -1.
type Stat struct {
	Pid                 int    // (1) pid
	Comm                string // (2) comm, without the parentheses
	State               byte   // (3) state: R S D Z T t X I P ...
	PPid                int    // (4) ppid
	Pgrp                int    // (5) pgrp
	Session             int    // (6) session
	TtyNr               int    // (7) tty_nr
	Tpgid               int    // (8) tpgid
	Flags               uint32 // (9) flags (PF_*)
	MinFlt              uint64 // (10) minflt
	CMinFlt             uint64 // (11) cminflt
	MajFlt              uint64 // (12) majflt
	CMajFlt             uint64 // (13) cmajflt
	UTime               uint64 // (14) utime, clock ticks
	STime               uint64 // (15) stime
	CUTime              int64  // (16) cutime
	CSTime              int64  // (17) cstime
	Priority            int64  // (18) priority
	Nice                int64  // (19) nice
	NumThreads          int    // (20) num_threads
	ItRealValue         int64  // (21) itrealvalue (always 0)
	StartTime           uint64 // (22) starttime, clock ticks since boot
	VSize               uint64 // (23) vsize, bytes
	Rss                 int64  // (24) rss, pages
	RssLim              uint64 // (25) rsslim
	StartCode           uint64 // (26) startcode
	EndCode             uint64 // (27) endcode
	StartStack          uint64 // (28) startstack
	KStkESP             uint64 // (29) kstkesp
	KStkEIP             uint64 // (30) kstkeip
	Signal              uint64 // (31) signal (obsolete, decimal)
	Blocked             uint64 // (32) blocked
	SigIgnore           uint64 // (33) sigignore
	SigCatch            uint64 // (34) sigcatch
	WChan               uint64 // (35) wchan (0 or 1 since Linux 4.4)
	NSwap               uint64 // (36) nswap
	CNSwap              uint64 // (37) cnswap
	ExitSignal          int    // (38) exit_signal
	Processor           int    // (39) processor
	RtPriority          uint32 // (40) rt_priority
	Policy              uint32 // (41) policy
	DelayAcctBlkioTicks uint64 // (42) delayacct_blkio_ticks
	GuestTime           uint64 // (43) guest_time
	CGuestTime          int64  // (44) cguest_time
	StartData           uint64 // (45) start_data
	EndData             uint64 // (46) end_data
	StartBrk            uint64 // (47) start_brk
	ArgStart            uint64 // (48) arg_start
	ArgEnd              uint64 // (49) arg_end
	EnvStart            uint64 // (50) env_start
	EnvEnd              uint64 // (51) env_end
	ExitCode            int    // (52) exit_code, wait(2) status
}

// ParseStat parses the content of a stat file. It requires "pid (comm) "
// followed by at least fields 3..52; extra trailing fields are ignored.
// Errors wrap ErrMalformed.
func ParseStat(r io.Reader) (*Stat, error) {
	b, err := readSmall("stat", r)
	if err != nil {
		return nil, err
	}
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 1 || closing < open || b[open-1] != ' ' {
		return nil, malformed("stat", 0, "no \"pid (comm)\" prefix")
	}
	s := &Stat{Comm: string(b[open+1 : closing])}
	if s.Pid, err = strconv.Atoi(string(b[:open-1])); err != nil {
		return nil, malformed("stat", 0, "bad pid %q", b[:open-1])
	}
	rest := strings.Fields(string(b[closing+1:]))
	if len(rest) < 50 {
		return nil, malformed("stat", 0, "%d fields after comm, want >= 50", len(rest))
	}
	if len(rest[0]) != 1 {
		return nil, malformed("stat", 0, "bad state %q", rest[0])
	}
	s.State = rest[0][0]
	// dst[i] receives field i+4.
	dst := []any{
		&s.PPid, &s.Pgrp, &s.Session, &s.TtyNr, &s.Tpgid, &s.Flags,
		&s.MinFlt, &s.CMinFlt, &s.MajFlt, &s.CMajFlt,
		&s.UTime, &s.STime, &s.CUTime, &s.CSTime, &s.Priority, &s.Nice,
		&s.NumThreads, &s.ItRealValue, &s.StartTime, &s.VSize, &s.Rss,
		&s.RssLim, &s.StartCode, &s.EndCode, &s.StartStack,
		&s.KStkESP, &s.KStkEIP, &s.Signal, &s.Blocked, &s.SigIgnore,
		&s.SigCatch, &s.WChan, &s.NSwap, &s.CNSwap, &s.ExitSignal,
		&s.Processor, &s.RtPriority, &s.Policy, &s.DelayAcctBlkioTicks,
		&s.GuestTime, &s.CGuestTime, &s.StartData, &s.EndData,
		&s.StartBrk, &s.ArgStart, &s.ArgEnd, &s.EnvStart, &s.EnvEnd,
		&s.ExitCode,
	}
	for i, d := range dst {
		if err := setNumber(d, rest[i+1], 10); err != nil {
			return nil, malformed("stat", 0, "field %d: %v", i+4, err)
		}
	}
	return s, nil
}

// ReadStat parses /proc/<pid>/stat.
func ReadStat(pid int) (*Stat, error) {
	return parseFile(PidPath(pid, "stat"), ParseStat)
}

// ReadTaskStat parses /proc/<pid>/task/<tid>/stat.
func ReadTaskStat(pid, tid int) (*Stat, error) {
	return parseFile(TaskPath(pid, tid, "stat"), ParseStat)
}

// setNumber parses s in the given base into *int, *int64, *uint32 or *uint64.
func setNumber(dst any, s string, base int) error {
	var err error
	switch p := dst.(type) {
	case *int:
		var v int64
		v, err = strconv.ParseInt(s, base, 0)
		*p = int(v)
	case *int64:
		*p, err = strconv.ParseInt(s, base, 64)
	case *uint32:
		var v uint64
		v, err = strconv.ParseUint(s, base, 32)
		*p = uint32(v)
	case *uint64:
		*p, err = strconv.ParseUint(s, base, 64)
	default:
		return msgError("unsupported destination type")
	}
	if err != nil {
		return msgError("bad number " + strconv.Quote(s))
	}
	return nil
}

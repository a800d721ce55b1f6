// Package kernel probes the kernel features the engine relies on, for
// `ctr-cr check`: every probe exercises the real interface (a system call,
// ptrace request, ioctl or procfs file) instead of guessing from the kernel
// version, and reports whether it works here and, when it does not, what the
// engine loses.
//
// Probes that need a target task start `sleep 5` (os/exec), seize it with
// ptrace on a goroutine locked to its OS thread, then kill and reap it by pid.
// Nothing is left behind: the child is reaped, every descriptor and mapping
// opened by a probe is closed, and no global setting is changed (files such as
// /proc/sys/kernel/ns_last_pid are opened for writing but never written).
package kernel

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// Feature is one probed kernel capability.
type Feature struct {
	Name     string // short stable identifier, e.g. "ptrace-seize"
	Required bool   // dump or restore cannot work without it
	Present  bool   // the probe succeeded on this machine
	Detail   string // what the probe saw: a value, or the errno that failed it
	Disables string // what the engine loses when the feature is missing
}

// Feature names, in report order.
const (
	fSeize          = "ptrace-seize"
	fSuspendSeccomp = "ptrace-suspend-seccomp"
	fXState         = "ptrace-xstate"
	fSigmask        = "ptrace-sigmask"
	fPeekSiginfo    = "ptrace-peeksiginfo"
	fRseq           = "ptrace-rseq-config"
	fSeccompFilter  = "ptrace-seccomp-filter"
	fVMReadv        = "process-vm-readv"
	fMemWrite       = "proc-mem-write"
	fPagemap        = "pagemap"
	fPagemapPFN     = "pagemap-pfn"
	fPagemapScan    = "pagemap-scan"
	fPidfdGetfd     = "pidfd-getfd"
	fKcmp           = "kcmp-file"
	fClone3SetTid   = "clone3-set-tid"
	fNsLastPid      = "ns-last-pid"
	fMMMap          = "prctl-mm-map"
	fCapCR          = "cap-checkpoint-restore"
	fCapResource    = "cap-sys-resource"
	fMapFiles       = "map-files"
	fMapVdso        = "arch-map-vdso"
	fTimerIDs       = "timer-restore-ids"
	fTimerfdTicks   = "timerfd-set-ticks"
	fFileHandles    = "open-by-handle"
	fUserfaultfd    = "userfaultfd"
	fSoftDirty      = "soft-dirty"
	fTimeNS         = "time-ns"
	fPidNS          = "pid-ns"
	fCgroupV2       = "cgroup-v2"
	fFreezerV1      = "cgroup-v1-freezer"
)

// spec is the static part of a Feature.
type spec struct {
	name     string
	required bool
	disables string
}

// catalog lists every feature Probe reports, in order.
var catalog = []spec{
	{fSeize, true, "everything: no task can be seized, so no dump or restore"},
	{fSuspendSeccomp, true, "seccomp-filtered targets: injected syscalls would hit their filters"},
	{fXState, true, "FPU/SSE/AVX register state (NT_X86_XSTATE) dump and restore"},
	{fSigmask, true, "blocked-signal masks and safe syscall injection (signals must be blocked)"},
	{fPeekSiginfo, true, "pending signals (dump fails)"},
	{fRseq, false, "rseq registrations are not saved"},
	{fSeccompFilter, false, "dumping seccomp filters"},
	{fVMReadv, true, "memory dump (page contents)"},
	{fMemWrite, true, "writing code and pages into read-only/PROT_NONE tracee mappings (injection, restore)"},
	{fPagemap, true, "memory dump (which pages are populated)"},
	{fPagemapPFN, false, "skipping pages that map the shared zero page (they are dumped as data)"},
	{fPagemapScan, false, "fast page scanning (falls back to reading pagemap entries)"},
	{fPidfdGetfd, true, "file descriptor dumping"},
	{fKcmp, true, "shared file detection (each fd would be dumped as its own file)"},
	{fClone3SetTid, false, "--pid-method clone3 (the default); use --pid-method ns_last_pid"},
	{fNsLastPid, false, "--pid-method ns_last_pid (the fallback when clone3 set_tid is missing)"},
	{fMMMap, true, "restoring mm fields and the exe link (PR_SET_MM_MAP)"},
	{fCapCR, true, "clone3 set_tid, map_files, the exe link, pagemap PFNs"},
	{fCapResource, false, "prlimit on other uids' tasks refused; single-field PR_SET_MM refused (PR_SET_MM_MAP is used)"},
	{fMapFiles, true, "shared memory and memfd mappings (opened through map_files)"},
	{fMapVdso, true, "restoring the vDSO at its dumped address (restore of any task with a vDSO fails)"},
	{fTimerIDs, false, "direct POSIX timer id restore (fallback: create/delete until ids match)"},
	{fTimerfdTicks, false, "restoring timerfd expirations not read yet (restore of such a timerfd fails)"},
	{fFileHandles, false, "inotify watches (their paths come from file handles: dump fails)"},
	{fUserfaultfd, false, "lazy restore and uffd-wp dirty tracking"},
	{fSoftDirty, false, "soft-dirty dirty tracking (uffd-wp is used instead)"},
	{fTimeNS, false, "time namespaces (container commands)"},
	{fPidNS, false, "pid namespaces (container commands)"},
	{fCgroupV2, false, "cgroup v2 placement and freezing (container commands)"},
	{fFreezerV1, false, "cgroup v1 freezer (container commands on v1 hosts)"},
}

// result is what one probe found.
type result struct {
	present bool
	detail  string
}

// prober collects probe results by feature name.
type prober struct{ res map[string]result }

// set records the outcome of the probe for name.
func (p *prober) set(name string, present bool, format string, args ...any) {
	p.res[name] = result{present, fmt.Sprintf(format, args...)}
}

// setAll records the same failure for several features.
func (p *prober) setAll(names []string, format string, args ...any) {
	for _, n := range names {
		p.set(n, false, format, args...)
	}
}

// Probe runs every probe and returns one Feature per catalog entry, in
// report order. It takes a few milliseconds, needs no arguments, and leaves
// no process, descriptor, mapping or setting behind. Features whose probes
// need privileges (ptrace of a child, PFNs, map_files) show up as missing
// when run unprivileged. ns-last-pid is Required exactly when
// clone3-set-tid is missing (one of the two pid methods must work).
//
// Probe is safe for concurrent use, but it reaps its probe child by pid: code
// that reaps arbitrary children (wait4(-1)) at the same time may steal it, and
// the ptrace probes then report the failure.
func Probe() []Feature {
	p := &prober{res: map[string]result{}}
	probeChild(p)
	probeMemory(p)
	probeSystem(p)
	out := make([]Feature, 0, len(catalog))
	for _, s := range catalog {
		r, ok := p.res[s.name]
		if !ok {
			r.detail = "not probed"
		}
		out = append(out, Feature{Name: s.name, Required: s.required, Present: r.present, Detail: r.detail, Disables: s.disables})
	}
	for i := range out {
		if out[i].Name == fNsLastPid {
			out[i].Required = !p.res[fClone3SetTid].present
		}
	}
	return out
}

// Report probes, writes a table to w (feature, present/MISSING, required or
// optional, detail, what a missing one disables) followed by a summary line,
// and returns the number of missing Required features. Write errors are
// ignored: the return value only reflects the probes.
func Report(w io.Writer) int {
	start := time.Now()
	fs := Probe()
	return writeReport(w, fs, time.Since(start))
}

// writeReport formats fs as Report does and returns the number of missing
// Required features.
func writeReport(w io.Writer, fs []Feature, took time.Duration) int {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FEATURE\tSTATUS\tNEED\tDETAIL\tDISABLES WHEN MISSING")
	missing, missingReq := 0, 0
	for _, f := range fs {
		status, need := "present", "optional"
		if !f.Present {
			status = "MISSING"
			missing++
		}
		if f.Required {
			need = "required"
			if !f.Present {
				missingReq++
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Name, status, need, oneLine(f.Detail), oneLine(f.Disables))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d features probed in %v: %d missing, %d of them required\n",
		len(fs), took.Round(100*time.Microsecond), missing, missingReq)
	return missingReq
}

// oneLine keeps table cells on one line and never empty.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "-"
	}
	return s
}

// errno describes err, naming the errno when there is one ("EPERM: operation
// not permitted").
func errno(err error) string {
	var e unix.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n + ": " + e.Error()
		}
	}
	return err.Error()
}

// isErrno reports whether err is the errno e.
func isErrno(err error, e unix.Errno) bool { return errors.Is(err, e) }

// Capability bits used by the probes.
const (
	capSysAdmin          = 21
	capSysResource       = 24
	capCheckpointRestore = 40
)

// effectiveCaps returns the CapEff mask of this process.
func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}

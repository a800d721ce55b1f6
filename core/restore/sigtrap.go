package restore

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
)

// The restorer's single steps and int3s force SIGTRAPs on the task (see
// core/ptrace/quiet.go): a queued SIGTRAP would be taken by the next one,
// an ignored SIGTRAP reset to the default. So queued SIGTRAPs and an
// ignored SIGTRAP action are put back last, in finishTask, with quiet
// injection (PTRACE_SYSCALL stops, no trap) and SIGTRAP blocked, and the
// control area is unmapped the same way; threads that end in such a stop
// get the kernel's syscall-restart fix-up applied to their registers.

// isSigtrap reports whether raw siginfo s is a SIGTRAP.
func isSigtrap(s *imagepb.Siginfo) bool {
	return len(s.Raw) >= 4 && binary.LittleEndian.Uint32(s.Raw) == uint32(unix.SIGTRAP)
}

// sigtrapIgnored reports whether the image's SIGTRAP action is SIG_IGN.
func (r *restorer) sigtrapIgnored() bool {
	for _, a := range r.pr.core.Sigactions {
		if a.Sig == uint32(unix.SIGTRAP) {
			return a.Handler == 1
		}
	}
	return false
}

// needsQuietFinish reports whether SIGTRAP state is left for finishTask.
func (r *restorer) needsQuietFinish() bool {
	if r.sigtrapIgnored() {
		return true
	}
	for _, s := range r.pr.core.SharedPending {
		if isSigtrap(s) {
			return true
		}
	}
	for _, t := range r.pr.core.Threads {
		for _, s := range t.Pending {
			if isSigtrap(s) {
				return true
			}
		}
	}
	return false
}

// quiet switches thread i to quiet injection with every signal blocked.
func (r *restorer) quiet(i int) error {
	t := r.threads[i]
	if t.in.Quiet {
		return nil
	}
	if err := ptrace.SetSigmask(t.tid, ^uint64(0)); err != nil {
		return err
	}
	t.in.Quiet = true
	return nil
}

// restoreSigtrap puts the SIGTRAP action (when ignored) and the queued
// SIGTRAPs back by quiet injection; thread 0 is left quiet for the
// control area's unmapping.
func (r *restorer) restoreSigtrap() error {
	if err := r.quiet(0); err != nil {
		return err
	}
	if r.sigtrapIgnored() {
		act := make([]byte, 32)
		u64(act, 0, 1) // SIG_IGN
		for _, a := range r.pr.core.Sigactions {
			if a.Sig == uint32(unix.SIGTRAP) {
				u64(act, 8, a.Flags)
				u64(act, 16, a.Restorer)
				u64(act, 24, a.Mask)
			}
		}
		addr, err := r.put(0, act)
		if err != nil {
			return err
		}
		if _, err := r.call(0, "rt_sigaction(SIGTRAP, SIG_IGN)", unix.SYS_RT_SIGACTION, uint64(unix.SIGTRAP), addr, 0, 8); err != nil {
			return err
		}
	}
	for _, s := range r.pr.core.SharedPending {
		if !isSigtrap(s) {
			continue
		}
		addr, err := r.put(0, s.Raw)
		if err != nil {
			return err
		}
		if _, err := r.call(0, "rt_sigqueueinfo(SIGTRAP)", unix.SYS_RT_SIGQUEUEINFO, uint64(r.nsPid), uint64(unix.SIGTRAP), addr); err != nil {
			return err
		}
	}
	for i, t := range r.threads {
		for _, s := range t.core.Pending {
			if !isSigtrap(s) {
				continue
			}
			if err := r.quiet(i); err != nil {
				return err
			}
			addr, err := r.put(0, s.Raw)
			if err != nil {
				return err
			}
			if _, err := r.call(i, "rt_tgsigqueueinfo(SIGTRAP)", unix.SYS_RT_TGSIGQUEUEINFO, uint64(r.nsPid), uint64(t.nsTid), uint64(unix.SIGTRAP), addr); err != nil {
				return fmt.Errorf("tid %d: %w", t.tid, err)
			}
		}
	}
	return nil
}

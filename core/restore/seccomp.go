package restore

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
)

const (
	prSetSeccomp      = 22 // PR_SET_SECCOMP
	seccompModeStrict = 1
)

// Seccomp filters are attached to a thread as a chain; a thread created
// by clone shares its creator's chain, and SECCOMP_FILTER_FLAG_TSYNC makes
// every thread share the caller's. Sharing is visible: a later TSYNC
// install fails on any thread whose chain does not descend from the
// caller's. The image has each thread's chain as filter programs, so a
// filter prefix common to the leader and every other filtered thread is
// taken as shared: the leader installs it before the filtered threads are
// cloned from it (they inherit the very same filters), threads without
// filters are cloned before. Each thread then installs the rest of its
// own chain. Filters go in while the task is still root
// (CAP_SYS_ADMIN), before credentials and no_new_privs, so an
// unprivileged task with filters and without no_new_privs comes back too;
// the restorer's injected calls are not filtered (PTRACE_O_SUSPEND_SECCOMP).

// sharedSeccompPrefix is how many of the leader's filters every filtered
// thread of the image starts with.
func sharedSeccompPrefix(threads []*imagepb.ThreadCore) int {
	if len(threads) == 0 {
		return 0
	}
	n := len(threads[0].Seccomp)
	for _, t := range threads[1:] {
		if len(t.Seccomp) == 0 {
			continue
		}
		k := 0
		for k < n && k < len(t.Seccomp) && sameFilter(threads[0].Seccomp[k], t.Seccomp[k]) {
			k++
		}
		n = k
	}
	return n
}

func sameFilter(a, b *imagepb.SeccompFilter) bool {
	return a.Flags == b.Flags && bytes.Equal(a.Bpf, b.Bpf)
}

// installSeccomp installs filters fs in thread i, in their install order.
func (r *restorer) installSeccomp(i int, fs []*imagepb.SeccompFilter) error {
	for _, f := range fs {
		if len(f.Bpf) == 0 || len(f.Bpf)%8 != 0 || len(f.Bpf) > 4096*8 {
			return fmt.Errorf("seccomp filter of %d bytes", len(f.Bpf))
		}
		prog, err := r.put(64, f.Bpf)
		if err != nil {
			return err
		}
		fp := make([]byte, 16)
		binary.LittleEndian.PutUint16(fp[0:], uint16(len(f.Bpf)/8))
		u64(fp, 8, prog)
		addr, err := r.put(0, fp)
		if err != nil {
			return err
		}
		if f.Flags&^ptrace.SeccompFilterFlagLog != 0 {
			return fmt.Errorf("seccomp filter flags %#x: not supported", f.Flags)
		}
		if _, err := r.call(i, "seccomp(SET_MODE_FILTER)", unix.SYS_SECCOMP, seccompSetModeFilter, f.Flags, addr); err != nil {
			return err
		}
	}
	return nil
}

// restoreSharedSeccomp installs in the leader the filters it shares with
// the other filtered threads; createThreads calls it once the threads
// without filters exist.
func (r *restorer) restoreSharedSeccomp() error {
	n := sharedSeccompPrefix(r.pr.core.Threads)
	r.seccompShared = n
	if n == 0 {
		return nil
	}
	if err := r.installSeccomp(0, r.pr.core.Threads[0].Seccomp[:n]); err != nil {
		return fmt.Errorf("tid %d: seccomp: %w", r.threads[0].tid, err)
	}
	return nil
}

// restoreSeccomp installs thread i's own filters (after the shared ones it
// inherited) and, for a thread in strict mode, enters it.
func (r *restorer) restoreSeccomp(i int) error {
	tc := r.threads[i].core
	own := tc.Seccomp
	if len(own) > 0 && r.seccompShared > 0 {
		own = own[r.seccompShared:]
	}
	if err := r.installSeccomp(i, own); err != nil {
		return err
	}
	if tc.SeccompStrict {
		if len(tc.Seccomp) > 0 {
			return fmt.Errorf("seccomp strict mode with filters")
		}
		if _, err := r.call(i, "prctl(PR_SET_SECCOMP, STRICT)", unix.SYS_PRCTL, prSetSeccomp, seccompModeStrict); err != nil {
			return err
		}
	}
	return nil
}

package nsdump

// The ipc sysctls are per IPC namespace: the kernel picks the namespace of
// the thread that opens the /proc/sys file (its nsproxy), not the /proc
// mount's, so these helpers must run on a thread inside the namespace
// (threadns.RunIn). TestSysctlFollowsThread checks that on this kernel.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

const procSys = "/proc/sys/"

type sysctlRef struct {
	file string
	u    *uint64
	i    *int64
}

// refs lists the scalar sysctls; shm_rmid_forced comes last on purpose
// (see writeIPCSysctls).
func (sc *IPCSysctls) refs() []sysctlRef {
	rs := []sysctlRef{
		{file: "kernel/shmmax", u: &sc.ShmMax},
		{file: "kernel/shmall", u: &sc.ShmAll},
		{file: "kernel/shmmni", i: &sc.ShmMni},
		{file: "kernel/msgmax", i: &sc.MsgMax},
		{file: "kernel/msgmnb", i: &sc.MsgMnb},
		{file: "kernel/msgmni", i: &sc.MsgMni},
	}
	if m := sc.Mqueue; m != nil {
		rs = append(rs,
			sysctlRef{file: "fs/mqueue/queues_max", i: &m.QueuesMax},
			sysctlRef{file: "fs/mqueue/msg_max", i: &m.MsgMax},
			sysctlRef{file: "fs/mqueue/msgsize_max", i: &m.MsgsizeMax},
			sysctlRef{file: "fs/mqueue/msg_default", i: &m.MsgDefault},
			sysctlRef{file: "fs/mqueue/msgsize_default", i: &m.MsgsizeDefault},
		)
	}
	return append(rs, sysctlRef{file: "kernel/shm_rmid_forced", i: &sc.ShmRmidForced})
}

func readSysctl(file string) (string, error) {
	b, err := os.ReadFile(procSys + file)
	if err != nil {
		return "", fmt.Errorf("sysctl %s: %w", file, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(file, val string) error {
	f, err := os.OpenFile(procSys+file, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", file, err)
	}
	_, err = f.WriteString(val)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sysctl %s = %s: %w", file, val, err)
	}
	return nil
}

// readIPCSysctls reads the sysctls of the calling thread's IPC namespace.
func readIPCSysctls() (IPCSysctls, error) {
	var sc IPCSysctls
	if _, err := os.Stat(procSys + "fs/mqueue"); err == nil {
		sc.Mqueue = &MqueueSysctls{}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return sc, fmt.Errorf("sysctl fs/mqueue: %w", err)
	}
	for _, r := range sc.refs() {
		s, err := readSysctl(r.file)
		if err != nil {
			return sc, err
		}
		if r.u != nil {
			*r.u, err = strconv.ParseUint(s, 10, 64)
		} else {
			*r.i, err = strconv.ParseInt(s, 10, 64)
		}
		if err != nil {
			return sc, fmt.Errorf("sysctl %s: %w", r.file, err)
		}
	}
	s, err := readSysctl("kernel/sem")
	if err != nil {
		return sc, err
	}
	f := strings.Fields(s)
	if len(f) != 4 {
		return sc, fmt.Errorf("sysctl kernel/sem: %q: want 4 fields", s)
	}
	for i := range f {
		if sc.Sem[i], err = strconv.ParseInt(f[i], 10, 64); err != nil {
			return sc, fmt.Errorf("sysctl kernel/sem: %w", err)
		}
	}
	return sc, nil
}

// writeIPCSysctls writes sc into the calling thread's IPC namespace, in
// refs order (shm_rmid_forced last), kernel/sem before it.
func writeIPCSysctls(sc *IPCSysctls) error {
	rs := sc.refs()
	for _, r := range rs[:len(rs)-1] {
		if err := writeSysctl(r.file, r.String()); err != nil {
			return err
		}
	}
	sem := fmt.Sprintf("%d %d %d %d", sc.Sem[0], sc.Sem[1], sc.Sem[2], sc.Sem[3])
	if err := writeSysctl("kernel/sem", sem); err != nil {
		return err
	}
	last := rs[len(rs)-1]
	return writeSysctl(last.file, last.String())
}

func (r sysctlRef) String() string {
	if r.u != nil {
		return strconv.FormatUint(*r.u, 10)
	}
	return strconv.FormatInt(*r.i, 10)
}

// raiseLimits returns the larger of cur and want, field by field, for the
// limits that can make object creation fail; the result is written while
// objects are recreated and want itself afterwards. shm_rmid_forced is kept
// at 0 meanwhile.
func raiseLimits(cur, want *IPCSysctls, need *IPCSysctls) IPCSysctls {
	r := *want
	if want.Mqueue != nil {
		m := *want.Mqueue
		r.Mqueue = &m
	}
	mx := func(a, b, c int64) int64 { return max(a, b, c) }
	mxu := func(a, b, c uint64) uint64 { return max(a, b, c) }
	r.ShmMax = mxu(cur.ShmMax, want.ShmMax, need.ShmMax)
	r.ShmAll = mxu(cur.ShmAll, want.ShmAll, need.ShmAll)
	r.ShmMni = mx(cur.ShmMni, want.ShmMni, need.ShmMni)
	r.MsgMax = mx(cur.MsgMax, want.MsgMax, need.MsgMax)
	r.MsgMnb = mx(cur.MsgMnb, want.MsgMnb, need.MsgMnb)
	r.MsgMni = mx(cur.MsgMni, want.MsgMni, need.MsgMni)
	for i := range r.Sem {
		r.Sem[i] = mx(cur.Sem[i], want.Sem[i], need.Sem[i])
	}
	r.ShmRmidForced = 0
	return r
}

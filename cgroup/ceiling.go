package cgroup

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ErrAboveResources is returned (wrapped, naming the setting) by
// CheckWithin when settings read from an image allow more than the
// config's linux.resources.
var ErrAboveResources = errors.New("above the bundle's linux.resources")

// CheckWithin holds settings read back from an image (which may be
// edited) to the limits the restore's config sets: a restore must not
// give a container more memory, swap, CPU time or share, pids or CPUs and
// memory nodes than `RUNTIME run` of the same bundle would. Settings the
// config leaves unset are not limited (the runtime leaves them at the
// kernel's default, no limit); lower values are fine (`runc update` may
// have lowered them before the checkpoint). Memory reservation (a soft
// protection) is held to the config's value too when it sets one.
func (s *Settings) CheckWithin(r *specs.LinuxResources) error {
	if s == nil || r == nil {
		return nil
	}
	v1 := s.as(1)
	above := func(what string, have, limit string) error {
		return fmt.Errorf("cgroup %s %s: %w (%s)", what, have, ErrAboveResources, limit)
	}
	if m := r.Memory; m != nil {
		for _, c := range []struct {
			what, field string
			have, cfg   *int64
		}{
			{"memory limit", "memory.limit", v1.MemoryLimit, m.Limit},
			{"memory+swap limit", "memory.swap", v1.MemorySwap, m.Swap},
			{"memory reservation", "memory.reservation", v1.MemoryReservation, m.Reservation},
		} {
			if c.cfg == nil || *c.cfg <= 0 || c.have == nil {
				continue
			}
			if *c.have == -1 || *c.have > *c.cfg {
				return above(c.what, bytesString(*c.have), fmt.Sprintf("linux.resources.%s is %d", c.field, *c.cfg))
			}
		}
		if s.Version == 2 && m.Swap != nil && *m.Swap > 0 && s.MemorySwap != nil && v1.MemorySwap == nil {
			// swap-only limit without a memory limit: compare swap alone
			if *s.MemorySwap == -1 || *s.MemorySwap > *m.Swap {
				return above("swap limit", bytesString(*s.MemorySwap), fmt.Sprintf("linux.resources.memory.swap is %d", *m.Swap))
			}
		}
	}
	if c := r.CPU; c != nil {
		if err := s.cpuWithin(c, above); err != nil {
			return err
		}
	}
	if p := r.Pids; p != nil && p.Limit != nil && *p.Limit > 0 && s.PidsMax != nil {
		if *s.PidsMax == -1 || *s.PidsMax > *p.Limit {
			return above("pids.max", bytesString(*s.PidsMax), fmt.Sprintf("linux.resources.pids.limit is %d", *p.Limit))
		}
	}
	return nil
}

func (s *Settings) cpuWithin(c *specs.LinuxCPU, above func(what, have, limit string) error) error {
	if c.Shares != nil && *c.Shares > 0 {
		switch {
		case s.CPUShares != nil && *s.CPUShares > *c.Shares:
			return above("cpu.shares", fmt.Sprint(*s.CPUShares), fmt.Sprintf("linux.resources.cpu.shares is %d", *c.Shares))
		case s.CPUWeight != nil && *s.CPUWeight > sharesToWeight(*c.Shares):
			return above("cpu.weight", fmt.Sprint(*s.CPUWeight), fmt.Sprintf("linux.resources.cpu.shares is %d, weight %d", *c.Shares, sharesToWeight(*c.Shares)))
		}
	}
	if c.Quota != nil && *c.Quota > 0 && s.CPUQuota != nil {
		period := uint64(100000) // the kernel's and the runtimes' default
		if c.Period != nil && *c.Period > 0 {
			period = *c.Period
		}
		limit := fmt.Sprintf("linux.resources.cpu.quota/period is %d/%d", *c.Quota, period)
		if *s.CPUQuota == -1 {
			return above("cpu quota", "unlimited", limit)
		}
		havePeriod := period
		if s.CPUPeriod != nil {
			havePeriod = *s.CPUPeriod
		}
		// quota/period as a share of one CPU: compare cross-multiplied
		if uint64(*s.CPUQuota)*period > uint64(*c.Quota)*havePeriod {
			return above("cpu quota/period", fmt.Sprintf("%d/%d", *s.CPUQuota, havePeriod), limit)
		}
	}
	for _, l := range []struct{ what, have, cfg string }{{"cpuset.cpus", s.CpusetCpus, c.Cpus}, {"cpuset.mems", s.CpusetMems, c.Mems}} {
		if l.cfg == "" || l.have == "" {
			continue
		}
		ok, err := listSubset(l.have, l.cfg)
		if err != nil {
			return fmt.Errorf("cgroup %s: %w", l.what, err)
		}
		if !ok {
			return above(l.what, l.have, fmt.Sprintf("linux.resources.cpu.%s is %q", strings.TrimPrefix(l.what, "cpuset."), l.cfg))
		}
	}
	return nil
}

func bytesString(v int64) string {
	if v == -1 {
		return "unlimited"
	}
	return strconv.FormatInt(v, 10)
}

// listSubset reports whether every number of the kernel list a ("0-3,8")
// is in the list b. Both are checked as validList does.
func listSubset(a, b string) (bool, error) {
	if err := validList(a); err != nil {
		return false, err
	}
	if err := validList(b); err != nil {
		return false, err
	}
	inB := func(n uint64) bool {
		for _, part := range strings.Split(b, ",") {
			lo, hi, isRange := strings.Cut(part, "-")
			l, _ := strconv.ParseUint(lo, 10, 16)
			h := l
			if isRange {
				h, _ = strconv.ParseUint(hi, 10, 16)
			}
			if n >= l && n <= h {
				return true
			}
		}
		return false
	}
	for _, part := range strings.Split(a, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		l, _ := strconv.ParseUint(lo, 10, 16)
		h := l
		if isRange {
			h, _ = strconv.ParseUint(hi, 10, 16)
		}
		for n := l; n <= h; n++ {
			if !inB(n) {
				return false, nil
			}
		}
	}
	return true, nil
}

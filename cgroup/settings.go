package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Settings are the controller settings ctr-cr carries across a checkpoint.
// A nil field (or "" cpuset) was not read (controller absent) and is left
// alone by Apply; -1 means "no limit" (v1 huge value or -1, v2 "max").
// Version says which hierarchy's semantics the values have; Apply converts
// them when the target cgroup uses the other one.
type Settings struct {
	// Version is 1 (read from v1 controller files) or 2 (unified).
	Version int `json:"version"`

	// MemoryLimit in bytes: v1 memory.limit_in_bytes, v2 memory.max.
	MemoryLimit *int64 `json:"memory_limit,omitempty"`
	// MemorySwap in bytes: v1 memory.memsw.limit_in_bytes (memory+swap),
	// v2 memory.swap.max (swap only).
	MemorySwap *int64 `json:"memory_swap,omitempty"`
	// MemoryReservation in bytes: v1 memory.soft_limit_in_bytes, v2
	// memory.low.
	MemoryReservation *int64 `json:"memory_reservation,omitempty"`

	// CPUShares is v1 cpu.shares (2..262144).
	CPUShares *uint64 `json:"cpu_shares,omitempty"`
	// CPUWeight is v2 cpu.weight (1..10000).
	CPUWeight *uint64 `json:"cpu_weight,omitempty"`
	// CPUQuota in µs per period (-1: none): v1 cpu.cfs_quota_us, v2 cpu.max.
	CPUQuota *int64 `json:"cpu_quota,omitempty"`
	// CPUPeriod in µs: v1 cpu.cfs_period_us, v2 cpu.max.
	CPUPeriod *uint64 `json:"cpu_period,omitempty"`

	// PidsMax is pids.max (-1: "max").
	PidsMax *int64 `json:"pids_max,omitempty"`

	// CpusetCpus and CpusetMems are cpuset.cpus and cpuset.mems lists
	// ("0-3,5").
	CpusetCpus string `json:"cpuset_cpus,omitempty"`
	CpusetMems string `json:"cpuset_mems,omitempty"`
}

// Limits of Validate.
const (
	maxBytes  = int64(1) << 62 // v1 reports "no limit" as ~2^63 - page
	maxPids   = 4194304        // PID_MAX_LIMIT
	maxQuota  = int64(1) << 44 // µs; far above any real quota
	minPeriod = 1000           // kernel: 1 ms .. 1 s
	maxPeriod = 1000000
)

// Validate checks settings read back from an image that may be hostile:
// version 1 or 2, every value in the range the kernel accepts (or -1 for
// "no limit"), fields of the other version absent, cpuset lists made only of
// digits, ',' and '-' with ascending ranges.
func (s *Settings) Validate() error {
	if s == nil {
		return errors.New("cgroup settings: nil")
	}
	bad := func(f string, v any) error { return fmt.Errorf("cgroup settings: %s %v out of range", f, v) }
	if s.Version != 1 && s.Version != 2 {
		return fmt.Errorf("cgroup settings: version %d", s.Version)
	}
	for _, m := range []struct {
		name string
		v    *int64
	}{{"memory_limit", s.MemoryLimit}, {"memory_swap", s.MemorySwap}, {"memory_reservation", s.MemoryReservation}} {
		if m.v != nil && *m.v != -1 && (*m.v < 0 || *m.v > maxBytes) {
			return bad(m.name, *m.v)
		}
	}
	if s.Version == 1 && s.CPUWeight != nil {
		return errors.New("cgroup settings: cpu_weight in v1 settings")
	}
	if s.Version == 2 && s.CPUShares != nil {
		return errors.New("cgroup settings: cpu_shares in v2 settings")
	}
	if v := s.CPUShares; v != nil && (*v < 2 || *v > 262144) {
		return bad("cpu_shares", *v)
	}
	if v := s.CPUWeight; v != nil && (*v < 1 || *v > 10000) {
		return bad("cpu_weight", *v)
	}
	if v := s.CPUQuota; v != nil && *v != -1 && (*v < 1000 || *v > maxQuota) {
		return bad("cpu_quota", *v)
	}
	if v := s.CPUPeriod; v != nil && (*v < minPeriod || *v > maxPeriod) {
		return bad("cpu_period", *v)
	}
	if v := s.PidsMax; v != nil && *v != -1 && (*v < 0 || *v > maxPids) {
		return bad("pids_max", *v)
	}
	if err := validList(s.CpusetCpus); err != nil {
		return fmt.Errorf("cgroup settings: cpuset_cpus: %w", err)
	}
	if err := validList(s.CpusetMems); err != nil {
		return fmt.Errorf("cgroup settings: cpuset_mems: %w", err)
	}
	return nil
}

// validList checks a kernel cpu/node list such as "0-3,8,10-11".
func validList(l string) error {
	if l == "" {
		return nil
	}
	if len(l) > 4096 {
		return errors.New("list too long")
	}
	for _, part := range strings.Split(l, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 16)
		if err != nil || lo == "" || lo[0] == '+' {
			return fmt.Errorf("bad list %q", l)
		}
		if isRange {
			b, err := strconv.ParseUint(hi, 10, 16)
			if err != nil || hi == "" || hi[0] == '+' || b < a {
				return fmt.Errorf("bad list %q", l)
			}
		}
	}
	return nil
}

// Resources returns the settings in OCI form (v1 semantics: memory.swap is
// memory+swap, cpu shares); v2 weight is converted to shares.
func (s *Settings) Resources() *specs.LinuxResources {
	v := s.as(1)
	r := &specs.LinuxResources{}
	if v.MemoryLimit != nil || v.MemorySwap != nil || v.MemoryReservation != nil {
		r.Memory = &specs.LinuxMemory{Limit: v.MemoryLimit, Swap: v.MemorySwap, Reservation: v.MemoryReservation}
	}
	if v.CPUShares != nil || v.CPUQuota != nil || v.CPUPeriod != nil || v.CpusetCpus != "" || v.CpusetMems != "" {
		r.CPU = &specs.LinuxCPU{Shares: v.CPUShares, Quota: v.CPUQuota, Period: v.CPUPeriod, Cpus: v.CpusetCpus, Mems: v.CpusetMems}
	}
	if v.PidsMax != nil {
		r.Pids = &specs.LinuxPids{Limit: v.PidsMax}
	}
	return r
}

// sharesToWeight maps v1 cpu.shares [2, 262144] onto v2 cpu.weight
// [1, 10000] with the quadratic (in log2 shares) that crun and runc use,
// which maps the defaults onto each other (1024 -> 100).
func sharesToWeight(shares uint64) uint64 {
	if shares <= 2 {
		return 1
	}
	if shares >= 262144 {
		return 10000
	}
	l := math.Log2(float64(shares))
	return uint64(math.Ceil(math.Pow(10, (l*l+125*l)/612.0-7.0/34.0)))
}

// weightToShares is the inverse of sharesToWeight (up to rounding).
func weightToShares(weight uint64) uint64 {
	if weight <= 1 {
		return 2
	}
	if weight >= 10000 {
		return 262144
	}
	e := math.Log10(float64(weight)) + 7.0/34.0
	l := (-125 + math.Sqrt(125*125+4*612*e)) / 2
	sh := uint64(math.Round(math.Exp2(l)))
	return min(max(sh, 2), 262144)
}

// as returns a copy of s converted to version v: memory+swap vs swap only,
// shares vs weight.
func (s *Settings) as(v int) *Settings {
	o := *s
	if s.Version == v {
		return &o
	}
	o.Version = v
	if v == 2 {
		if s.CPUShares != nil {
			w := sharesToWeight(*s.CPUShares)
			o.CPUWeight, o.CPUShares = &w, nil
		}
		// memsw (memory+swap) to swap only.
		if s.MemorySwap != nil && *s.MemorySwap != -1 && s.MemoryLimit != nil && *s.MemoryLimit != -1 {
			sw := *s.MemorySwap - *s.MemoryLimit
			o.MemorySwap = &sw
		}
		return &o
	}
	if s.CPUWeight != nil {
		sh := weightToShares(*s.CPUWeight)
		o.CPUShares, o.CPUWeight = &sh, nil
	}
	if s.MemorySwap != nil && *s.MemorySwap != -1 {
		if s.MemoryLimit != nil && *s.MemoryLimit != -1 {
			sw := *s.MemorySwap + *s.MemoryLimit
			o.MemorySwap = &sw
		} else {
			o.MemorySwap = nil // swap-only limit without memory limit: no v1 equivalent
		}
	}
	return &o
}

// ReadSettings reads the memory, cpu, pids and cpuset settings. A v1 cgroup
// is read from its v1 controller directories (Version 1), a cgroup with
// none of those from the unified hierarchy (Version 2). Controllers the
// cgroup lacks give nil fields; a missing cgroup directory is an error
// wrapping fs.ErrNotExist.
func (c *Cgroup) ReadSettings() (*Settings, error) {
	for _, d := range c.dirs() {
		if _, err := os.Stat(d); err != nil {
			return nil, fmt.Errorf("cgroup %s: read settings: %w", d, err)
		}
	}
	v1 := false
	for _, k := range []string{"memory", "cpu", "pids", "cpuset"} {
		if c.v1[k] != "" {
			v1 = true
		}
	}
	if v1 {
		return c.readV1()
	}
	if c.unified == "" {
		return nil, fmt.Errorf("cgroup %v: read settings: %w", c.paths, ErrNoController)
	}
	return c.readV2()
}

// readInt reads an integer file; ok false when the file does not exist.
// "max" and values >= maxBytes read as -1.
func readInt(dir, file string) (v int64, ok bool, err error) {
	s, err := readString(dir, file)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("cgroup %s: read %s: %w", dir, file, err)
	}
	if s == "max" {
		return -1, true, nil
	}
	u, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		i, ierr := strconv.ParseInt(s, 10, 64)
		if ierr != nil {
			return 0, false, fmt.Errorf("cgroup %s: read %s: %w", dir, file, err)
		}
		return i, true, nil
	}
	if u >= uint64(maxBytes) {
		return -1, true, nil
	}
	return int64(u), true, nil
}

func ptr[T any](v T) *T { return &v }

func (c *Cgroup) readV1() (*Settings, error) {
	s := &Settings{Version: 1}
	type field struct {
		file string
		dst  **int64
	}
	read := func(ctrl string, fields []field) error {
		dir := c.v1[ctrl]
		if dir == "" {
			return nil
		}
		for _, f := range fields {
			v, ok, err := readInt(dir, f.file)
			if err != nil {
				return err
			}
			if ok {
				*f.dst = ptr(v)
			}
		}
		return nil
	}
	var shares, period *int64
	if err := read("memory", []field{
		{"memory.limit_in_bytes", &s.MemoryLimit},
		{"memory.memsw.limit_in_bytes", &s.MemorySwap},
		{"memory.soft_limit_in_bytes", &s.MemoryReservation},
	}); err != nil {
		return nil, err
	}
	if err := read("cpu", []field{
		{"cpu.shares", &shares},
		{"cpu.cfs_quota_us", &s.CPUQuota},
		{"cpu.cfs_period_us", &period},
	}); err != nil {
		return nil, err
	}
	if shares != nil {
		s.CPUShares = ptr(uint64(*shares))
	}
	if period != nil {
		s.CPUPeriod = ptr(uint64(*period))
	}
	if err := read("pids", []field{{"pids.max", &s.PidsMax}}); err != nil {
		return nil, err
	}
	if dir := c.v1["cpuset"]; dir != "" {
		var err error
		if s.CpusetCpus, err = readString(dir, "cpuset.cpus"); err != nil {
			return nil, fmt.Errorf("cgroup %s: read cpuset.cpus: %w", dir, err)
		}
		if s.CpusetMems, err = readString(dir, "cpuset.mems"); err != nil {
			return nil, fmt.Errorf("cgroup %s: read cpuset.mems: %w", dir, err)
		}
	}
	return s, nil
}

func (c *Cgroup) readV2() (*Settings, error) {
	dir := c.unified
	s := &Settings{Version: 2}
	for _, f := range []struct {
		file string
		dst  **int64
	}{
		{"memory.max", &s.MemoryLimit},
		{"memory.swap.max", &s.MemorySwap},
		{"memory.low", &s.MemoryReservation},
		{"pids.max", &s.PidsMax},
	} {
		v, ok, err := readInt(dir, f.file)
		if err != nil {
			return nil, err
		}
		if ok {
			*f.dst = ptr(v)
		}
	}
	w, ok, err := readInt(dir, "cpu.weight")
	if err != nil {
		return nil, err
	}
	if ok {
		s.CPUWeight = ptr(uint64(w))
	}
	max, err := readString(dir, "cpu.max")
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("cgroup %s: read cpu.max: %w", dir, err)
	default:
		q, p, ok := strings.Cut(max, " ")
		per, perr := strconv.ParseUint(p, 10, 64)
		quota := int64(-1)
		var qerr error
		if q != "max" {
			quota, qerr = strconv.ParseInt(q, 10, 64)
		}
		if !ok || perr != nil || qerr != nil {
			return nil, fmt.Errorf("cgroup %s: read cpu.max: bad value %q", dir, max)
		}
		s.CPUQuota, s.CPUPeriod = &quota, &per
	}
	for _, f := range []struct {
		file string
		dst  *string
	}{{"cpuset.cpus", &s.CpusetCpus}, {"cpuset.mems", &s.CpusetMems}} {
		v, err := readString(dir, f.file)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("cgroup %s: read %s: %w", dir, f.file, err)
		}
		*f.dst = v
	}
	return s, nil
}

// Apply validates s and writes it to the cgroup, converting between v1 and
// v2 semantics when s.Version differs from the hierarchy the cgroup uses
// (v1 when it has any of the memory, cpu, pids, cpuset v1 controllers).
// Nil fields are left untouched. A value whose controller the cgroup lacks
// is an error wrapping ErrNoController; Apply stops at the first error
// (earlier values stay written).
func (c *Cgroup) Apply(s *Settings) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("cgroup %v: apply: %w", c.paths, err)
	}
	v1 := false
	for _, k := range []string{"memory", "cpu", "pids", "cpuset"} {
		if c.v1[k] != "" {
			v1 = true
		}
	}
	if v1 {
		return c.applyV1(s.as(1))
	}
	if c.unified == "" {
		return fmt.Errorf("cgroup %v: apply: %w", c.paths, ErrNoController)
	}
	return c.applyV2(s.as(2))
}

func (c *Cgroup) need(ctrl string) (string, error) {
	if d := c.v1[ctrl]; d != "" {
		return d, nil
	}
	return "", fmt.Errorf("cgroup %v: apply %s settings: %w", c.paths, ctrl, ErrNoController)
}

func write(dir, file, val string) error {
	if err := writeString(dir, file, val); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("%w (%w)", ErrNoController, err)
		}
		return fmt.Errorf("cgroup %s: write %s=%s: %w", dir, file, val, err)
	}
	return nil
}

func i64(v int64) string { return strconv.FormatInt(v, 10) }

func (c *Cgroup) applyV1(s *Settings) error {
	if s.MemoryLimit != nil || s.MemorySwap != nil || s.MemoryReservation != nil {
		dir, err := c.need("memory")
		if err != nil {
			return err
		}
		// memsw must never be below the memory limit: raise memsw
		// first when the new limit is above the current memsw.
		writes := [][2]string{}
		if s.MemoryLimit != nil {
			writes = append(writes, [2]string{"memory.limit_in_bytes", i64(*s.MemoryLimit)})
		}
		if s.MemorySwap != nil {
			sw := [2]string{"memory.memsw.limit_in_bytes", i64(*s.MemorySwap)}
			cur, _, err := readInt(dir, "memory.memsw.limit_in_bytes")
			if err != nil {
				return err
			}
			if s.MemoryLimit != nil && cur != -1 && (*s.MemoryLimit == -1 || *s.MemoryLimit > cur) {
				writes = append([][2]string{sw}, writes...)
			} else {
				writes = append(writes, sw)
			}
		}
		if s.MemoryReservation != nil {
			writes = append(writes, [2]string{"memory.soft_limit_in_bytes", i64(*s.MemoryReservation)})
		}
		for _, w := range writes {
			if err := write(dir, w[0], w[1]); err != nil {
				return err
			}
		}
	}
	if s.CPUShares != nil || s.CPUQuota != nil || s.CPUPeriod != nil {
		dir, err := c.need("cpu")
		if err != nil {
			return err
		}
		if s.CPUShares != nil {
			if err := write(dir, "cpu.shares", strconv.FormatUint(*s.CPUShares, 10)); err != nil {
				return err
			}
		}
		// Period then quota; if the kernel refuses (quota/period ratio
		// against the parent), the other order.
		var w [][2]string
		if s.CPUPeriod != nil {
			w = append(w, [2]string{"cpu.cfs_period_us", strconv.FormatUint(*s.CPUPeriod, 10)})
		}
		if s.CPUQuota != nil {
			w = append(w, [2]string{"cpu.cfs_quota_us", i64(*s.CPUQuota)})
		}
		if err := writeAll(dir, w); err != nil && len(w) == 2 {
			if err2 := writeAll(dir, [][2]string{w[1], w[0]}); err2 != nil {
				return err
			}
		} else if err != nil {
			return err
		}
	}
	if s.PidsMax != nil {
		dir, err := c.need("pids")
		if err != nil {
			return err
		}
		v := "max"
		if *s.PidsMax != -1 {
			v = i64(*s.PidsMax)
		}
		if err := write(dir, "pids.max", v); err != nil {
			return err
		}
	}
	if s.CpusetCpus != "" || s.CpusetMems != "" {
		dir, err := c.need("cpuset")
		if err != nil {
			return err
		}
		if s.CpusetCpus != "" {
			if err := write(dir, "cpuset.cpus", s.CpusetCpus); err != nil {
				return err
			}
		}
		if s.CpusetMems != "" {
			if err := write(dir, "cpuset.mems", s.CpusetMems); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeAll(dir string, w [][2]string) error {
	for _, x := range w {
		if err := write(dir, x[0], x[1]); err != nil {
			return err
		}
	}
	return nil
}

func maxOr(v int64) string {
	if v == -1 {
		return "max"
	}
	return i64(v)
}

func (c *Cgroup) applyV2(s *Settings) error {
	dir := c.unified
	var w [][2]string
	if s.MemorySwap != nil {
		w = append(w, [2]string{"memory.swap.max", maxOr(*s.MemorySwap)})
	}
	if s.MemoryLimit != nil {
		w = append(w, [2]string{"memory.max", maxOr(*s.MemoryLimit)})
	}
	if s.MemoryReservation != nil {
		w = append(w, [2]string{"memory.low", maxOr(*s.MemoryReservation)})
	}
	if s.CPUWeight != nil {
		w = append(w, [2]string{"cpu.weight", strconv.FormatUint(*s.CPUWeight, 10)})
	}
	if s.CPUQuota != nil || s.CPUPeriod != nil {
		q, p := "max", "100000"
		if s.CPUQuota != nil && *s.CPUQuota != -1 {
			q = i64(*s.CPUQuota)
		}
		if s.CPUPeriod != nil {
			p = strconv.FormatUint(*s.CPUPeriod, 10)
		}
		w = append(w, [2]string{"cpu.max", q + " " + p})
	}
	if s.PidsMax != nil {
		w = append(w, [2]string{"pids.max", maxOr(*s.PidsMax)})
	}
	if s.CpusetCpus != "" {
		w = append(w, [2]string{"cpuset.cpus", s.CpusetCpus})
	}
	if s.CpusetMems != "" {
		w = append(w, [2]string{"cpuset.mems", s.CpusetMems})
	}
	return writeAll(dir, w)
}

package cgroup

import (
	"errors"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCheckWithin(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	cfg := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(64 << 20), Swap: i64(128 << 20)},
		CPU:    &specs.LinuxCPU{Shares: u64(512), Quota: i64(50000), Period: u64(100000), Cpus: "0-1", Mems: "0"},
		Pids:   &specs.LinuxPids{Limit: i64(100)},
	}
	tests := []struct {
		name string
		s    Settings
		want string // "" for within
	}{
		{"as configured v2", Settings{Version: 2, MemoryLimit: i64(64 << 20), MemorySwap: i64(64 << 20), CPUWeight: u64(sharesToWeight(512)), CPUQuota: i64(50000), CPUPeriod: u64(100000), PidsMax: i64(100), CpusetCpus: "0-1", CpusetMems: "0"}, ""},
		{"lower v1", Settings{Version: 1, MemoryLimit: i64(32 << 20), MemorySwap: i64(32 << 20), CPUShares: u64(100), CPUQuota: i64(10000), CPUPeriod: u64(100000), PidsMax: i64(5), CpusetCpus: "1"}, ""},
		{"same share, other period", Settings{Version: 2, CPUQuota: i64(25000), CPUPeriod: u64(50000)}, ""},
		{"nothing read", Settings{Version: 2}, ""},
		{"memory unlimited", Settings{Version: 2, MemoryLimit: i64(-1)}, "memory limit unlimited"},
		{"memory above", Settings{Version: 1, MemoryLimit: i64(65 << 20)}, "memory limit 68157440"},
		{"swap above v2", Settings{Version: 2, MemoryLimit: i64(64 << 20), MemorySwap: i64(65 << 20)}, "memory+swap limit"},
		{"swap alone unlimited v2", Settings{Version: 2, MemorySwap: i64(-1)}, "swap limit unlimited"},
		{"shares above", Settings{Version: 1, CPUShares: u64(1024)}, "cpu.shares 1024"},
		{"weight above", Settings{Version: 2, CPUWeight: u64(100)}, "cpu.weight 100"},
		{"quota unlimited", Settings{Version: 2, CPUQuota: i64(-1)}, "cpu quota unlimited"},
		{"quota share above", Settings{Version: 2, CPUQuota: i64(30000), CPUPeriod: u64(50000)}, "cpu quota/period 30000/50000"},
		{"pids unlimited", Settings{Version: 2, PidsMax: i64(-1)}, "pids.max unlimited"},
		{"pids above", Settings{Version: 2, PidsMax: i64(101)}, "pids.max 101"},
		{"cpus outside", Settings{Version: 2, CpusetCpus: "0-2"}, "cpuset.cpus 0-2"},
		{"mems outside", Settings{Version: 2, CpusetMems: "0,1"}, "cpuset.mems 0,1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.CheckWithin(cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrAboveResources) {
				t.Fatalf("error %v, want one containing %q wrapping ErrAboveResources", err, tc.want)
			}
		})
	}
	if err := (&Settings{Version: 2, MemoryLimit: i64(-1), PidsMax: i64(-1)}).CheckWithin(&specs.LinuxResources{}); err != nil {
		t.Fatalf("no limits in the config: %v", err)
	}
}

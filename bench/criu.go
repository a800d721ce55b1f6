package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// The CRIU comparison: each process workload marked for it is started a
// second time the same way, and every round dumps and restores both
// instances, one with ctr-cr and one with criu, in alternating order, so
// that both tools meet the same machine state (load, page cache, memory
// the VM's host has backed). Each restore is checked from inside as for
// ctr-cr. The bench prints criu's numbers and one ratio line per workload
// and phase (dump wall, frozen, restore wall; ctr-cr/criu, below 1:
// ctr-cr is faster). criu's frozen time is read from its stats-dump image.

// criuAnchor is where the project keeps a criu 4.2 build (README there),
// relative to the repository's root (make bench's working directory).
const criuAnchor = "../shared/anchors/criu-4.2/criu"

// findCRIU returns the criu binary to compare with ("" if none) and a line
// saying what was found. want is the -criu flag: "auto" looks on PATH,
// then at criuAnchor; "none" turns the comparison off; anything else is
// the binary to use.
func findCRIU(want string) (string, string) {
	var p string
	switch want {
	case "none", "":
		return "", "comparison turned off (-criu none)"
	case "auto":
		if lp, err := exec.LookPath("criu"); err == nil {
			p = lp
		} else if abs, err := filepath.Abs(criuAnchor); err == nil && isExecutable(abs) {
			p = abs
		} else {
			return "", fmt.Sprintf("absent (no criu on PATH nor at %s); no comparison", criuAnchor)
		}
	default:
		p = want
	}
	out, err := exec.Command(p, "check").CombinedOutput()
	if err != nil {
		return "", fmt.Sprintf("criu at %s fails `criu check` (run scripts/deps.sh for its libraries): %s; no comparison", p, firstError(out, err))
	}
	v, _ := exec.Command(p, "--version").Output()
	return p, fmt.Sprintf("%s (%s) passes `criu check`: the process workloads run through it too, alternating with ctr-cr",
		p, strings.Join(strings.Fields(string(v)), " "))
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// firstError returns criu's first error line, skipping its "exited,
// status=1" reports of helper children, which say nothing about why.
func firstError(out []byte, err error) string {
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); strings.Contains(l, "Error") && !strings.Contains(l, "exited, status=") {
			return l
		}
	}
	if first := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]); first != "" {
		return first
	}
	return err.Error()
}

// criuEngine dumps and restores with criu. The workloads are session
// leaders without a terminal (started with setsid, output to a file), so
// neither --shell-job nor any other external is needed; the dump kills the
// tree as ctr-cr's does, and restore -d leaves the tree running, reparented
// to the bench (a subreaper). criu wants its image directory to exist.
func criuEngine(bin string) engine {
	return engine{
		name: "criu",
		bin:  bin,
		dump: func(pid int, img string) []string {
			return []string{"dump", "-t", strconv.Itoa(pid), "-D", img, "-o", "dump.log"}
		},
		restore: func(img string) []string {
			return []string{"restore", "-d", "-D", img, "-o", "restore.log"}
		},
		prepare: func(img string) error { return os.MkdirAll(img, 0o755) },
		frozen: func(img string, _ []byte) (float64, bool) {
			st, err := readCRIUDumpStats(filepath.Join(img, "stats-dump"))
			if err != nil {
				return 0, false
			}
			return float64(st.frozenUs) / 1000, true
		},
		logs: func(img string) string {
			var b bytes.Buffer
			for _, f := range []string{"dump.log", "restore.log"} {
				if out, err := exec.Command("tail", "-n", "5", filepath.Join(img, f)).Output(); err == nil {
					fmt.Fprintf(&b, "\n%s:\n%s", f, out)
				}
			}
			return b.String()
		},
	}
}

// criuDumpStats is the part of criu's dump statistics the bench reports
// (microseconds).
type criuDumpStats struct {
	freezingUs, frozenUs, memdumpUs, memwriteUs uint64
}

// readCRIUDumpStats decodes criu's stats-dump image: two 32-bit magics
// (the service-image magic, then the stats one), a 32-bit little-endian
// length, and that many bytes of a StatsEntry protobuf message whose
// field 1 is the dump statistics: freezing_time = 1, frozen_time = 2,
// memdump_time = 3, memwrite_time = 4 (varints, microseconds). The
// layout is criu's documented image format; this decoder is written for
// the bench from it, with protowire, reading only those fields.
func readCRIUDumpStats(path string) (criuDumpStats, error) {
	var st criuDumpStats
	b, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	if len(b) < 12 {
		return st, errors.New("stats-dump: too short")
	}
	n := binary.LittleEndian.Uint32(b[8:12])
	if uint64(len(b)-12) < uint64(n) {
		return st, errors.New("stats-dump: entry truncated")
	}
	dump, ok := protoField(b[12:12+n], 1)
	if !ok {
		return st, errors.New("stats-dump: no dump entry")
	}
	for len(dump) > 0 {
		num, typ, l := protowire.ConsumeTag(dump)
		if l < 0 {
			return st, errors.New("stats-dump: bad tag")
		}
		dump = dump[l:]
		if typ != protowire.VarintType {
			l = protowire.ConsumeFieldValue(num, typ, dump)
			if l < 0 {
				return st, errors.New("stats-dump: bad field")
			}
			dump = dump[l:]
			continue
		}
		v, l := protowire.ConsumeVarint(dump)
		if l < 0 {
			return st, errors.New("stats-dump: bad varint")
		}
		dump = dump[l:]
		switch num {
		case 1:
			st.freezingUs = v
		case 2:
			st.frozenUs = v
		case 3:
			st.memdumpUs = v
		case 4:
			st.memwriteUs = v
		}
	}
	return st, nil
}

// protoField returns the bytes of the first length-delimited field num of
// message m.
func protoField(m []byte, num protowire.Number) ([]byte, bool) {
	for len(m) > 0 {
		n, typ, l := protowire.ConsumeTag(m)
		if l < 0 {
			return nil, false
		}
		m = m[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(m)
			return v, l >= 0
		}
		l = protowire.ConsumeFieldValue(n, typ, m)
		if l < 0 {
			return nil, false
		}
		m = m[l:]
	}
	return nil, false
}

// ratioLines returns the machine-readable lines comparing ctr-cr's run r
// with the run c of the same workload by other ("criu", "runc+criu"):
// other's medians, then one ratio line per phase (ctr-cr/other; below 1:
// ctr-cr is faster).
func ratioLines(r, c *result, other string) []string {
	lines := []string{fmt.Sprintf("%s name=%s dump_ms=%.1f frozen_ms=%.1f restore_ms=%.1f image_mib=%.1f rss_mib=%.1f",
		other, r.name, median(c.dump), median(c.frozen), median(c.restore), c.image, c.rss)}
	for _, ph := range []struct {
		name string
		a, b []float64
	}{{"dump", r.dump, c.dump}, {"frozen", r.frozen, c.frozen}, {"restore", r.restore, c.restore}} {
		a, b := median(ph.a), median(ph.b)
		q := "-"
		if b > 0 && len(ph.a) > 0 {
			q = fmt.Sprintf("%.2f", a/b)
		}
		lines = append(lines, fmt.Sprintf("ratio name=%s phase=%s ctrcr_ms=%.1f %s_ms=%.1f ratio=%s (ctr-cr/%s, medians of %d alternating rounds)",
			r.name, ph.name, a, strings.ReplaceAll(other, "+", "_"), b, q, other, len(ph.a)))
	}
	return lines
}

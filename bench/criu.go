package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// The CRIU comparison: when a criu binary on PATH passes `criu check`, each
// process workload marked for it is started again the same way and dumped
// and restored by criu as many times as by ctr-cr, with the same check of
// the restored memory; the bench then prints criu's numbers and the ratios
// ctr-cr/criu. criu's frozen time is not measured (it is in its binary
// stats-dump image, not on stdout). Containers are not compared.

// findCRIU returns the criu binary to compare with ("" if none) and a line
// saying what was found.
func findCRIU() (string, string) {
	p, err := exec.LookPath("criu")
	if err != nil {
		return "", "absent (no criu binary on PATH); no comparison"
	}
	out, err := exec.Command(p, "check").CombinedOutput()
	if err != nil {
		// the first error line, skipping criu's "exited, status=1"
		// reports of its helper children, which say nothing about why
		first := ""
		for _, l := range strings.Split(string(out), "\n") {
			if l = strings.TrimSpace(l); strings.Contains(l, "Error") && !strings.Contains(l, "exited, status=") {
				first = l
				break
			}
		}
		if first == "" {
			first = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
		}
		if first == "" {
			first = err.Error()
		}
		return "", fmt.Sprintf("criu at %s fails `criu check`: %s; no comparison", p, first)
	}
	v, _ := exec.Command(p, "--version").Output()
	return p, fmt.Sprintf("%s (%s) passes `criu check`: the process workloads run through it too",
		p, strings.Join(strings.Fields(string(v)), " "))
}

// criuEngine dumps and restores with criu. The workloads are session
// leaders without a terminal (started with setsid, output to a file), so
// neither --shell-job nor any other external is needed; the dump kills the
// tree as ctr-cr's does, and restore -d leaves the tree running, reparented
// to the bench (a subreaper).
func criuEngine(bin string) engine {
	return engine{
		bin: bin,
		dump: func(pid int, img string) []string {
			return []string{"dump", "-t", strconv.Itoa(pid), "-D", img, "-o", "dump.log"}
		},
		restore: func(img string) []string {
			return []string{"restore", "-d", "-D", img, "-o", "restore.log"}
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

// criuLines returns the machine-readable lines for criu's run c of the
// workload ctr-cr ran as r: criu's medians and the ratios ctr-cr/criu
// (below 1: ctr-cr is faster or smaller).
func criuLines(r, c *result) []string {
	q := func(a, b float64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	return []string{
		fmt.Sprintf("criu name=%s dump_ms=%.1f restore_ms=%.1f image_mib=%.1f rss_mib=%.1f",
			r.name, median(c.dump), median(c.restore), c.image, c.rss),
		fmt.Sprintf("ratio name=%s dump=%s restore=%s image=%s rss=%s (ctr-cr/criu)",
			r.name, q(median(r.dump), median(c.dump)), q(median(r.restore), median(c.restore)), q(r.image, c.image), q(r.rss, c.rss)),
	}
}

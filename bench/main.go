// Command bench measures ctr-cr on fixed workloads (make bench) and, when a
// criu is found (on PATH or in ../shared/anchors/criu-4.2), compares it
// with CRIU in the same run: for each process workload, a ctr-cr instance
// and a criu instance are dumped and restored in alternating rounds. It
// reports medians and min-max of dump ms, frozen ms, restore ms, image MiB
// and the tool's peak RSS, as a table and as machine-readable lines:
//
//	bench name=anon-64M dump_ms=... frozen_ms=... restore_ms=... image_mib=... rss_mib=...
//	criu name=anon-64M dump_ms=... frozen_ms=... restore_ms=... image_mib=... rss_mib=...
//	ratio name=anon-64M phase=dump ctrcr_ms=... criu_ms=... ratio=... (ctr-cr/criu, ...)
//
// The workload is this binary re-executed: it maps N MiB of anonymous memory,
// fills it with a pattern, and on SIGUSR1 verifies the whole region and
// reports the result, so every restore is checked, not only timed.
// -load N runs N CPU hogs and a buffered writer for the whole bench.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
	"github.com/ctr-cr/ctr-cr/internal/timing"
)

func main() {
	if len(os.Args) > 1 && reexec(os.Args[1], os.Args[2:]) {
		return
	}
	sizes := flag.String("sizes", "64,256,1024", "MiB of anonymous memory per workload (empty: none)")
	runs := flag.Int("runs", 5, "dump/restore cycles per workload (per tool)")
	flag.IntVar(&warmup, "warmup", 1, "untimed dump/restore cycles before the timed ones (the first cycle also pays for first use of the VM's memory)")
	goMiB := flag.Int("go-mib", 512, "MiB of live Go heap in the multi-threaded Go workload (0: skip)")
	treeN := flag.Int("tree", 20, "processes in the tree workload (0: skip)")
	ctMiB := flag.Int("ct-mib", 256, "MiB of memory for a second container workload (the bench binary as the container's init); 0: skip")
	flag.BoolVar(&platforms, "platforms", true, "podman's checkpoint/restore of a busybox counter with ctr-cr as its runtime (bin/runtime/runc), and with runc and criu when criu is found")
	flag.BoolVar(&lxcBench, "lxc", true, "LXC: a busybox container checkpointed (-s) and restored by lxc-checkpoint with ctr-cr as its criu (and with criu 4.2 when found); checkpoint and restore columns are lxc-checkpoint's whole time")
	containers := flag.Bool("containers", true, "containers: a busybox counter under runc and under crun, and one holding 256 MiB under runc (checkpoint = ctr-cr checkpoint, restore = ctr-cr restore BUNDLE)")
	criuFlag := flag.String("criu", "auto", "criu binary to compare with: auto (PATH, then "+criuAnchor+"), none, or a path")
	flag.BoolVar(&showPhases, "phases", false, "also print the medians of ctr-cr's --print-stats figures (dump and restore phases) per workload")
	flag.IntVar(&preCopyMiB, "precopy-mib", 1024, "pre-copy: a process of this many MiB writing -precopy-dirty-kib KiB a second, pre-dumped twice (the first round through a page server) and dumped with --parent-path (0: skip)")
	flag.IntVar(&preCopyDirtyKiB, "precopy-dirty-kib", 1024, "KiB a second the pre-copy workload writes")
	flag.IntVar(&lazyMiB, "lazy", 1024, "MiB of the workload restored eagerly and with --lazy-pages, compared (time until it runs, until its last page is in); 0: skip")
	load := flag.Int("load", 0, "run this many CPU hogs and one buffered writer during the whole bench (0: quiet)")
	flag.Parse()
	bin := os.Getenv("CTRCR_BIN")
	if bin == "" {
		bin = "bin/ctr-cr"
	}
	if os.Geteuid() != 0 {
		fmt.Println("bench: needs root")
		os.Exit(1)
	}
	// children must not inherit our extra fds; restored ones are reparented
	// to us so we can reap them
	unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	criu, why := findCRIU(*criuFlag)
	fmt.Println("criu:", why)
	stopLoad, err := startLoad(*load)
	if err != nil {
		fmt.Println("bench: load:", err)
		os.Exit(1)
	}
	if *load > 0 {
		fmt.Printf("load: %d CPU hogs + 1 buffered writer (loadavg at start %s)\n", *load, loadAvg())
	} else {
		fmt.Printf("load: none added (loadavg at start %s)\n", loadAvg())
	}
	code := runBench(bin, criu, procWorkloads(*sizes, *goMiB, *treeN), *runs, *containers, *ctMiB)
	stopLoad()
	os.Exit(code)
}

// preCopyMiB and preCopyDirtyKiB are -precopy-mib and -precopy-dirty-kib
// (premig.go).
var preCopyMiB, preCopyDirtyKiB int

// lazyMiB is -lazy (lazy.go).
var lazyMiB int

// showPhases is -phases.
var showPhases bool

// platforms is -platforms (platform.go).
var platforms bool

// lxcBench is -lxc (lxc.go).
var lxcBench bool

// reexec runs the workload or load process named by the first argument
// (this binary re-executed by the bench) and reports whether it was one.
func reexec(what string, args []string) bool {
	switch {
	case what == "workload" && len(args) >= 2:
		workload(args[0], args[1])
	case what == "goheap-workload" && len(args) >= 1:
		goHeapWorkload(args[0])
	case what == "dirty-workload" && len(args) >= 3:
		dirtyWorkload(args[0], args[1], args[2])
	case what == "tree-workload" && len(args) >= 3:
		treeWorkload(args[0], args[1], args[2])
	case what == "hog-load":
		hogLoad()
	case what == "writer-load" && len(args) >= 1:
		writerLoad(args[0])
	default:
		return false
	}
	return true
}

// procWorkloads lists the process workloads the flags ask for.
func procWorkloads(sizes string, goMiB, treeN int) []procWorkload {
	var work []procWorkload
	for _, s := range strings.Split(sizes, ",") {
		if strings.TrimSpace(s) == "" {
			continue
		}
		mib, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fmt.Println("bench: bad size", s)
			os.Exit(2)
		}
		work = append(work, procWorkload{name: fmt.Sprintf("anon-%dM", mib), args: []string{"workload", strconv.Itoa(mib)}, procs: 1, criu: true})
	}
	if goMiB > 0 {
		work = append(work, procWorkload{name: fmt.Sprintf("go-%dM", goMiB), args: []string{"goheap-workload", strconv.Itoa(goMiB)}, procs: 1, criu: true})
	}
	if treeN > 0 {
		// n processes with 8 MiB each; --jobs is ctr-cr dump's
		// parallelism (1: one process at a time; 0: not given, the
		// default by idle CPUs)
		for _, jobs := range []int{1, 4, 0} {
			name, args := fmt.Sprintf("tree-%d-j%d", treeN, jobs), []string{"--jobs", strconv.Itoa(jobs)}
			if jobs == 0 {
				name, args = fmt.Sprintf("tree-%d-auto", treeN), nil
			}
			work = append(work, procWorkload{name: name, args: []string{"tree-workload", strconv.Itoa(treeN), "8"},
				procs: treeN, dumpArgs: args, criu: jobs == 1})
		}
	}
	return work
}

// runBench runs every workload, prints the table and then the
// machine-readable lines, and returns the exit code.
func runBench(bin, criu string, work []procWorkload, runs int, containers bool, ctMiB int) int {
	var lines, ratios []string
	lines = append(lines, benchStartup(bin, 30))
	fmt.Printf("%-22s %5s %22s %22s %22s %10s %8s\n", "workload", "runs", "dump ms med [min-max]", "frozen ms med [min-max]", "restore ms med [min-max]", "image MiB", "rss MiB")
	for _, w := range work {
		engines := []engine{ctrcrEngine(bin, w.dumpArgs)}
		if criu != "" && w.criu {
			engines = append(engines, criuEngine(criu))
		}
		res, err := benchAlternating(w.name, engines, w.args, w.procs, runs)
		if err != nil {
			fmt.Printf("bench: %s: %v\n", w.name, err)
			return 1
		}
		lines = append(lines, res[0].report())
		if showPhases {
			lines = append(lines, res[0].phaseLine())
		}
		if len(res) > 1 {
			res[1].report()
			ratios = append(ratios, ratioLines(res[0], res[1], "criu")...)
		}
	}
	if preCopyMiB > 0 {
		pl, err := benchPreCopy(bin, preCopyMiB, preCopyDirtyKiB, runs)
		if err != nil {
			fmt.Printf("bench: %v\n", err)
			return 1
		}
		lines = append(lines, pl...)
	}
	if lazyMiB > 0 {
		ll, err := benchLazy(bin, lazyMiB, runs)
		if err != nil {
			fmt.Printf("bench: lazy: %v\n", err)
			return 1
		}
		lines = append(lines, ll...)
	}
	if containers {
		cl, cr, err := benchContainers(bin, criu, runs, ctMiB)
		if err != nil {
			fmt.Printf("bench: %v\n", err)
			return 1
		}
		lines = append(lines, cl...)
		ratios = append(ratios, cr...)
	}
	if platforms {
		lines = append(lines, benchPlatforms(bin, criu, runs)...)
	}
	if lxcBench {
		if _, err := exec.LookPath("lxc-checkpoint"); err != nil {
			fmt.Println("bench: lxc: lxc-checkpoint is not installed: skipped")
		} else {
			abs, _ := filepath.Abs(bin)
			r, err := benchLXC("lxc-busybox", abs, runs)
			if err != nil {
				fmt.Printf("bench: lxc-busybox: %v\n", err)
				return 1
			}
			lines = append(lines, r.report())
			if criu != "" {
				if c, err := benchLXC("criu:lxc-busybox", criu, runs); err != nil {
					fmt.Printf("criu: lxc-busybox: %v (no ratio)\n", err)
				} else {
					c.report()
					ratios = append(ratios, ratioLines(r, c, "criu")...)
				}
			}
		}
	}
	for _, l := range lines {
		fmt.Println(l)
	}
	for _, l := range ratios {
		fmt.Println(l)
	}
	fmt.Printf("loadavg at end: %s\n", loadAvg())
	return 0
}

// benchContainers runs the container workloads and returns their lines
// and (runc workloads, with a criu) the ratio lines against runc + criu.
func benchContainers(bin, criu string, runs, ctMiB int) ([]string, []string, error) {
	// crun refuses this machine kind's hybrid cgroup layout unless the
	// cgroup2 hierarchy is hidden from it (as in bundle-tests)
	wrapper, err := testutil.CrunWrapper()
	if err != nil {
		return nil, nil, fmt.Errorf("crun wrapper: %w", err)
	} else if wrapper != "" {
		defer os.RemoveAll(wrapper)
	}
	counter := "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done"
	var lines, ratios []string
	for _, c := range []struct {
		name    string
		runtime string
		script  string
		mib     int
	}{
		{"ct-busybox", "runc", counter, 0},
		{"ct-busybox-crun", "crun", counter, 0},
		{fmt.Sprintf("ct-%dM", ctMiB), "runc", "", ctMiB},
	} {
		if c.name == "ct-0M" {
			continue
		}
		if _, err := exec.LookPath(c.runtime); err != nil {
			fmt.Printf("bench: %s: %s is not installed: skipped\n", c.name, c.runtime)
			continue
		}
		engines := []ctEngine{ctrcrContainer(bin)}
		if criu != "" && c.runtime == "runc" {
			engines = append(engines, runcCRIUContainer(criu))
		}
		res, err := benchContainer(c.name, c.runtime, c.script, c.mib, runs, engines)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", c.name, err)
		}
		lines = append(lines, res[0].report())
		if showPhases {
			lines = append(lines, res[0].phaseLine())
		}
		if len(res) > 1 {
			res[1].report()
			ratios = append(ratios, ratioLines(res[0], res[1], "runc+criu")...)
		}
	}
	return lines, ratios, nil
}

// benchStartup times `ctr-cr --version` (start-up and exit, nothing else)
// n times, interleaved with /bin/true as the cost of any fork+exec+wait
// here, prints median and min-max of both and returns the machine-readable
// line.
func benchStartup(bin string, n int) string {
	var ct, tr []float64
	for i := 0; i < n; i++ {
		for _, c := range []struct {
			argv []string
			v    *[]float64
		}{{[]string{bin, "--version"}, &ct}, {[]string{"/bin/true"}, &tr}} {
			t0 := time.Now()
			if err := exec.Command(c.argv[0], c.argv[1:]...).Run(); err != nil {
				fmt.Printf("bench: %s: %v\n", c.argv[0], err)
				os.Exit(1)
			}
			*c.v = append(*c.v, ms(time.Since(t0)))
		}
	}
	fmt.Printf("start-up: ctr-cr --version %s ms, /bin/true %s ms (median [min-max] of %d)\n", stat(ct), stat(tr), n)
	return fmt.Sprintf("bench name=startup startup_ms=%.1f true_ms=%.1f", median(ct), median(tr))
}

// procWorkload is a process tree started from this binary with args (its
// processes print "ready" once each and verify their memory on SIGUSR1).
type procWorkload struct {
	name     string
	args     []string
	procs    int
	dumpArgs []string // extra ctr-cr dump arguments
	criu     bool     // also through criu when it is there
}

func workload(mibs, dir string) {
	mib, _ := strconv.Atoi(mibs)
	n := mib << 20
	mem, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		fmt.Println("mmap:", err)
		os.Exit(1)
	}
	for i := 0; i < n; i += 8 {
		mem[i] = byte(i>>12) ^ 0x5a
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	fmt.Println("ready")
	for range sig {
		ok := true
		for i := 0; i < n; i += 8 {
			if mem[i] != byte(i>>12)^0x5a {
				ok = false
				break
			}
		}
		if ok {
			fmt.Println("verified ok")
		} else {
			fmt.Println("verify FAILED")
		}
	}
}

func waitForN(path, word string, n int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for countLines(path, word) < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("workload not %s after %v", word, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func countLines(path, word string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), word)
}

func dirMiB(dir string) float64 {
	var total int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			total += fi.Size()
		}
	}
	return float64(total) / (1 << 20)
}

var ms = timing.Ms // the one definition: internal/timing

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func stat(v []float64) string {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f [%.1f-%.1f]", median(s), s[0], s[len(s)-1])
}

// treeWorkload starts n-1 children (memory workloads of mib MiB each) and is
// one itself, so the tree has n processes that all verify on SIGUSR1.
func treeWorkload(ns, mibs, dir string) {
	n, _ := strconv.Atoi(ns)
	self, _ := os.Executable()
	for i := 1; i < n; i++ {
		c := exec.Command(self, "workload", mibs, dir)
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		if err := c.Start(); err != nil {
			fmt.Println("start child:", err)
			os.Exit(1)
		}
	}
	workload(mibs, dir)
}

// descendants lists every descendant of pid.
func descendants(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
				out = append(out, descendants(c)...)
			}
		}
	}
	return out
}

// Command bench measures ctr-cr on fixed workloads (make bench): for each, it
// dumps and restores the same process several times and reports medians and
// min-max of dump ms, frozen ms, restore ms, image MiB and ctr-cr's peak RSS,
// as a table and as one machine-readable line per workload:
//
//	bench name=anon-64M dump_ms=... frozen_ms=... restore_ms=... image_mib=... rss_mib=...
//
// The workload is this binary re-executed: it maps N MiB of anonymous memory,
// fills it with a pattern, and on SIGUSR1 verifies the whole region and
// reports the result, so every restore is checked, not only timed.
package main

import (
	"bytes"
	"encoding/json"
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
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "workload" {
		workload(os.Args[2], os.Args[3])
		return
	}
	if len(os.Args) > 2 && os.Args[1] == "goheap-workload" {
		goHeapWorkload(os.Args[2])
		return
	}
	if len(os.Args) > 3 && os.Args[1] == "tree-workload" {
		treeWorkload(os.Args[2], os.Args[3])
		return
	}
	sizes := flag.String("sizes", "64,256,1024", "MiB of anonymous memory per workload (empty: none)")
	runs := flag.Int("runs", 5, "dump/restore cycles per workload")
	flag.IntVar(&warmup, "warmup", 1, "untimed dump/restore cycles before the timed ones (the first cycle also pays for first use of the VM's memory)")
	goMiB := flag.Int("go-mib", 512, "MiB of live Go heap in the multi-threaded Go workload (0: skip)")
	treeN := flag.Int("tree", 20, "processes in the tree workload (0: skip)")
	ctMiB := flag.Int("ct-mib", 256, "MiB of memory for a second container workload (the bench binary as the container's init); 0: skip")
	lxc := flag.Bool("lxc", true, "LXC: a busybox container checkpointed (-s) and restored by lxc-checkpoint with ctr-cr as its criu (and with criu 4.2 when found); checkpoint and restore columns are lxc-checkpoint's whole time")
	containers := flag.Bool("containers", true, "containers: a busybox counter under runc and under crun, and one holding 256 MiB under runc (checkpoint = ctr-cr checkpoint, restore = ctr-cr restore BUNDLE)")
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
	criu, why := findCRIU()
	fmt.Println("criu:", why)
	var work []procWorkload
	for _, s := range strings.Split(*sizes, ",") {
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
	if *goMiB > 0 {
		work = append(work, procWorkload{name: fmt.Sprintf("go-%dM", *goMiB), args: []string{"goheap-workload", strconv.Itoa(*goMiB)}, procs: 1, criu: true})
	}
	if *treeN > 0 {
		// n processes with 8 MiB each; --jobs is ctr-cr dump's
		// parallelism (1: one process at a time)
		for _, jobs := range []int{1, 4} {
			work = append(work, procWorkload{name: fmt.Sprintf("tree-%d-j%d", *treeN, jobs), args: []string{"tree-workload", strconv.Itoa(*treeN), "8"},
				procs: *treeN, dumpArgs: []string{"--jobs", strconv.Itoa(jobs)}, criu: jobs == 1})
		}
	}
	var lines []string
	var ratios []string
	lines = append(lines, benchStartup(bin, 30))
	fmt.Printf("%-16s %5s %22s %22s %22s %10s %8s\n", "workload", "runs", "dump ms med [min-max]", "frozen ms med [min-max]", "restore ms med [min-max]", "image MiB", "rss MiB")
	for _, w := range work {
		r, err := benchCycles(w.name, ctrcrEngine(bin, w.dumpArgs), w.args, w.procs, *runs)
		if err != nil {
			fmt.Printf("bench: %s: %v\n", w.name, err)
			os.Exit(1)
		}
		lines = append(lines, r.report())
		if criu != "" && w.criu {
			// the same workload, launched the same way, through criu
			c, err := benchCycles(w.name, criuEngine(criu), w.args, w.procs, *runs)
			if err != nil {
				fmt.Printf("criu: %s: %v (no ratio)\n", w.name, err)
				continue
			}
			c.name = "criu:" + w.name
			c.report()
			ratios = append(ratios, criuLines(r, c)...)
		}
	}
	if *containers {
		// crun refuses this machine kind's hybrid cgroup layout unless
		// the cgroup2 hierarchy is hidden from it (as in bundle-tests)
		if wrapper, err := testutil.CrunWrapper(); err != nil {
			fmt.Printf("bench: crun wrapper: %v\n", err)
			os.Exit(1)
		} else if wrapper != "" {
			defer os.RemoveAll(wrapper)
		}
		counter := "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done"
		for _, c := range []struct {
			name    string
			runtime string
			script  string
			mib     int
		}{
			{"ct-busybox", "runc", counter, 0},
			{"ct-busybox-crun", "crun", counter, 0},
			{fmt.Sprintf("ct-%dM", *ctMiB), "runc", "", *ctMiB},
		} {
			if c.name == "ct-0M" {
				continue
			}
			if _, err := exec.LookPath(c.runtime); err != nil {
				fmt.Printf("bench: %s: %s is not installed: skipped\n", c.name, c.runtime)
				continue
			}
			r, err := benchContainer(bin, c.name, c.runtime, c.script, c.mib, *runs)
			if err != nil {
				fmt.Printf("bench: %s: %v\n", c.name, err)
				os.Exit(1)
			}
			lines = append(lines, r.report())
		}
	}
	if *lxc {
		if _, err := exec.LookPath("lxc-checkpoint"); err != nil {
			fmt.Println("bench: lxc: lxc-checkpoint is not installed: skipped")
		} else {
			abs, _ := filepath.Abs(bin)
			r, err := benchLXC("lxc-busybox", abs, *runs)
			if err != nil {
				fmt.Printf("bench: lxc-busybox: %v\n", err)
				os.Exit(1)
			}
			lines = append(lines, r.report())
			if criu != "" {
				if c, err := benchLXC("criu:lxc-busybox", criu, *runs); err != nil {
					fmt.Printf("criu: lxc-busybox: %v (no ratio)\n", err)
				} else {
					c.report()
					ratios = append(ratios, criuLines(r, c)...)
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

// engine is the tool a process workload is dumped and restored with.
type engine struct {
	bin     string
	dump    func(pid int, img string) []string
	restore func(img string) []string
	logs    func(img string) string // what to add to a failed dump or restore's error
}

func (e engine) fail(img string, err error) error {
	if e.logs != nil {
		return fmt.Errorf("%v%s", err, e.logs(img))
	}
	return err
}

func ctrcrEngine(bin string, dumpArgs []string) engine {
	return engine{
		bin: bin,
		dump: func(pid int, img string) []string {
			return append([]string{"dump", "-t", strconv.Itoa(pid), "-D", img, "--print-stats"}, dumpArgs...)
		},
		restore: func(img string) []string { return []string{"restore", "-D", img, "-d"} },
	}
}

// report prints r's table row and returns its machine-readable line.
func (r *result) report() string {
	fmt.Printf("%-16s %5d %22s %22s %22s %10.1f %8.1f\n", r.name, len(r.dump), stat(r.dump), stat(r.frozen), stat(r.restore), r.image, r.rss)
	return fmt.Sprintf("bench name=%s dump_ms=%.1f frozen_ms=%.1f restore_ms=%.1f image_mib=%.1f rss_mib=%.1f",
		r.name, median(r.dump), median(r.frozen), median(r.restore), r.image, r.rss)
}

type result struct {
	name                  string
	dump, frozen, restore []float64
	image, rss            float64
}

// warmup is the number of untimed cycles each workload starts with: on
// this VM the first write of page cache onto memory the guest has not used
// since boot costs several times a later one (the host backs it then), so
// a first cycle can take 2-5x the steady state. Its timings are dropped;
// everything else (the memory check after restore) is done as usual.
var warmup = 1

// dropWarmup removes the timings of the warm-up cycles.
func (r *result) dropWarmup() {
	cut := func(s []float64) []float64 { return s[min(warmup, len(s)):] }
	r.dump, r.frozen, r.restore = cut(r.dump), cut(r.frozen), cut(r.restore)
}

// benchCycles starts the workload (argv after the binary; its processes
// print "ready" once each), then dumps and restores it runs times, checking
// after each restore that every process verifies its memory.
func benchCycles(name string, e engine, wargs []string, procs, runs int) (*result, error) {
	r := &result{name: name}
	dir, err := os.MkdirTemp("", "ctr-cr-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	self, _ := os.Executable()
	out := filepath.Join(dir, "out")
	of, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append(append([]string(nil), wargs...), dir)...)
	cmd.Stdout, cmd.Stderr = of, of
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	of.Close()
	pid := cmd.Process.Pid
	defer func() {
		for _, p := range append(descendants(pid), pid) {
			unix.Kill(p, unix.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
		reapAll()
	}()
	if err := waitForN(out, "ready", procs, 120*time.Second); err != nil {
		return nil, err
	}
	defer r.dropWarmup()
	for i := 0; i < warmup+runs; i++ {
		img := filepath.Join(dir, fmt.Sprintf("img%d", i))
		tree := append([]int{pid}, descendants(pid)...)
		if err := r.timeDump(e.bin, e.dump(pid, img)); err != nil {
			return nil, e.fail(img, err)
		}
		// the killed tree is ours to reap (its root is our child, the
		// rest reparented to us, the subreaper)
		for _, p := range tree {
			for k := 0; k < 2000; k++ {
				reapAll()
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); err != nil {
					break
				}
				time.Sleep(time.Millisecond)
			}
		}
		r.image = dirMiB(img)
		if err := r.timeRestore(e.bin, e.restore(img)); err != nil {
			return nil, e.fail(img, err)
		}
		// verify the restored memory from inside
		before := countLines(out, "verified ok")
		for _, p := range tree {
			unix.Kill(p, unix.SIGUSR1)
		}
		deadline := time.Now().Add(60 * time.Second)
		for countLines(out, "verified ok") < before+len(tree) {
			if time.Now().After(deadline) || countLines(out, "verify FAILED") > 0 {
				b, _ := os.ReadFile(out)
				return nil, fmt.Errorf("restored workload did not verify: %s", b)
			}
			time.Sleep(5 * time.Millisecond)
		}
		os.RemoveAll(img)
	}
	return r, nil
}

// run runs ctr-cr with args, returns its wall time and standard output,
// and keeps the largest peak RSS in r.
func (r *result) run(bin string, args []string) (float64, []byte, error) {
	t0 := time.Now()
	c := exec.Command(bin, args...)
	var so, se bytes.Buffer
	c.Stdout, c.Stderr = &so, &se
	if err := c.Run(); err != nil {
		return 0, nil, fmt.Errorf("%s: %v: %s", args[0], err, se.String())
	}
	d := ms(time.Since(t0))
	if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.rss = max(r.rss, float64(ru.Maxrss)/1024)
	}
	return d, so.Bytes(), nil
}

// timeDump runs a dump (or checkpoint) with --print-stats and records its
// time and frozen time.
func (r *result) timeDump(bin string, args []string) error {
	// Each timed dump starts with no dirty page cache from earlier work
	// (the bench's own build, the images of other workloads), so that its
	// writeback does not compete with the dump's own writes on a 2-CPU VM.
	unix.Sync()
	d, out, err := r.run(bin, args)
	if err != nil {
		return err
	}
	var st struct {
		FrozenMs *float64 `json:"frozen_ms"`
	}
	r.dump = append(r.dump, d)
	if json.Unmarshal(out, &st) == nil && st.FrozenMs != nil {
		r.frozen = append(r.frozen, *st.FrozenMs)
	}
	return nil
}

// timeRestore runs a restore and records its time.
func (r *result) timeRestore(bin string, args []string) error {
	d, _, err := r.run(bin, args)
	if err != nil {
		return err
	}
	r.restore = append(r.restore, d)
	return nil
}

func reapAll() {
	for {
		var ws unix.WaitStatus
		p, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if p <= 0 || err != nil {
			return
		}
	}
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

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

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
func treeWorkload(ns, mibs string) {
	n, _ := strconv.Atoi(ns)
	self, _ := os.Executable()
	dir := os.Args[4]
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

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// engine is the tool a process workload is dumped and restored with.
type engine struct {
	name    string
	bin     string
	dump    func(pid int, img string) []string
	restore func(img string) []string
	prepare func(img string) error                          // before the dump (nil: nothing)
	frozen  func(img string, stdout []byte) (float64, bool) // the dump's frozen ms
	logs    func(img string) string                         // what to add to a failed dump or restore's error
	phases  bool                                            // dump and restore print --print-stats JSON
	// nullStdio runs the tool with /dev/null as stdin, stdout and stderr
	// (runc restore: the restored container keeps them)
	nullStdio bool
}

func (e engine) fail(img string, err error) error {
	if e.logs != nil {
		return fmt.Errorf("%s: %v%s", e.name, err, e.logs(img))
	}
	return fmt.Errorf("%s: %w", e.name, err)
}

func ctrcrEngine(bin string, dumpArgs []string) engine {
	return engine{
		name: "ctr-cr",
		bin:  bin,
		dump: func(pid int, img string) []string {
			return append([]string{"dump", "-t", strconv.Itoa(pid), "-D", img, "--print-stats"}, dumpArgs...)
		},
		restore: func(img string) []string { return []string{"restore", "-D", img, "-d", "--print-stats"} },
		frozen:  frozenFromStats,
		phases:  true,
	}
}

// frozenFromStats reads frozen_ms from ctr-cr's --print-stats JSON.
func frozenFromStats(_ string, stdout []byte) (float64, bool) {
	var st struct {
		FrozenMs *float64 `json:"frozen_ms"`
	}
	if json.Unmarshal(stdout, &st) != nil || st.FrozenMs == nil {
		return 0, false
	}
	return *st.FrozenMs, true
}

// instance is one running copy of a process workload.
type instance struct {
	dir, out string
	pid      int
	procs    int
}

// startInstance starts the workload (argv after the bench binary; its
// processes print "ready" once each) in a directory of its own and waits
// until all procs processes are ready.
func startInstance(wargs []string, procs int) (*instance, error) {
	dir, err := os.MkdirTemp("", "ctr-cr-bench-")
	if err != nil {
		return nil, err
	}
	in := &instance{dir: dir, out: filepath.Join(dir, "out"), procs: procs}
	self, _ := os.Executable()
	of, err := os.OpenFile(in.out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(self, append(append([]string(nil), wargs...), dir)...)
	cmd.Stdout, cmd.Stderr = of, of
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	of.Close()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	in.pid = cmd.Process.Pid
	if err := waitForN(in.out, "ready", procs, 120*time.Second); err != nil {
		in.stop()
		return nil, err
	}
	return in, nil
}

// stop kills the instance's tree, reaps it and removes its directory.
func (in *instance) stop() {
	for _, p := range append(descendants(in.pid), in.pid) {
		unix.Kill(p, unix.SIGKILL)
	}
	time.Sleep(50 * time.Millisecond)
	reapAll()
	os.RemoveAll(in.dir)
}

// cycle dumps the instance with e into a fresh image directory, restores
// it, checks from inside that every process verifies its memory, records
// the timings in r and removes the image.
func (in *instance) cycle(e engine, r *result, round int) error {
	img := filepath.Join(in.dir, fmt.Sprintf("img%d", round))
	if e.prepare != nil {
		if err := e.prepare(img); err != nil {
			return e.fail(img, err)
		}
	}
	tree := append([]int{in.pid}, descendants(in.pid)...)
	if err := r.timeDump(e, img, e.dump(in.pid, img)); err != nil {
		return e.fail(img, err)
	}
	// the killed tree is ours to reap (its root is our child, the rest
	// reparented to us, the subreaper)
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
	if err := r.timeRestore(e, e.restore(img)); err != nil {
		return e.fail(img, err)
	}
	before := countLines(in.out, "verified ok")
	for _, p := range tree {
		unix.Kill(p, unix.SIGUSR1)
	}
	deadline := time.Now().Add(60 * time.Second)
	for countLines(in.out, "verified ok") < before+len(tree) {
		if time.Now().After(deadline) || countLines(in.out, "verify FAILED") > 0 {
			b, _ := os.ReadFile(in.out)
			return e.fail(img, fmt.Errorf("restored workload did not verify: %s", b))
		}
		time.Sleep(5 * time.Millisecond)
	}
	return os.RemoveAll(img)
}

// benchAlternating runs the workload once per engine (separate instances
// started the same way) and, in each of warmup+runs rounds, dumps and
// restores every instance with its engine, the engines' order rotating
// from round to round so that neither always goes first. It returns one
// result per engine, warm-up rounds dropped.
func benchAlternating(name string, engines []engine, wargs []string, procs, runs int) ([]*result, error) {
	var ins []*instance
	defer func() {
		for _, in := range ins {
			in.stop()
		}
	}()
	res := make([]*result, len(engines))
	for k, e := range engines {
		in, err := startInstance(wargs, procs)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.name, err)
		}
		ins = append(ins, in)
		res[k] = &result{name: name}
		if k > 0 {
			res[k].name = e.name + ":" + name
		}
	}
	for i := 0; i < warmup+runs; i++ {
		for j := range engines {
			k := (i + j) % len(engines)
			if err := ins[k].cycle(engines[k], res[k], i); err != nil {
				return nil, err
			}
		}
	}
	for _, r := range res {
		r.dropWarmup()
	}
	return res, nil
}

type result struct {
	name                  string
	dump, frozen, restore []float64
	image, rss            float64
	// the --print-stats figures of each dump and restore, by "dump." or
	// "restore." and the JSON name (ctr-cr only)
	phases map[string][]float64
}

// addPhases keeps the numbers of a --print-stats JSON object, under
// prefix.
func (r *result) addPhases(prefix string, stdout []byte) {
	// one object, or one per line (restore --lazy-pages adds its own)
	for _, line := range bytes.Split(bytes.TrimSpace(stdout), []byte("\n")) {
		r.addPhaseLine(prefix, line)
	}
}

func (r *result) addPhaseLine(prefix string, stdout []byte) {
	var m map[string]any
	if json.Unmarshal(stdout, &m) != nil {
		return
	}
	if r.phases == nil {
		r.phases = map[string][]float64{}
	}
	for k, v := range m {
		switch v := v.(type) {
		case float64:
			r.phases[prefix+k] = append(r.phases[prefix+k], v)
		case map[string]any: // a container's engine figures ("dump")
			for k2, v2 := range v {
				if f, ok := v2.(float64); ok {
					r.phases[prefix+k+"."+k2] = append(r.phases[prefix+k+"."+k2], f)
				}
			}
		}
	}
}

// phaseLine returns the medians of r's --print-stats figures as one line
// ("" when there are none), for -phases.
func (r *result) phaseLine() string {
	if len(r.phases) == 0 {
		return ""
	}
	var keys []string
	for k := range r.phases {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "phases name=%s", r.name)
	for _, k := range keys {
		v := r.phases[k][min(warmup, len(r.phases[k])):]
		if len(v) > 0 {
			fmt.Fprintf(&b, " %s=%.4g", k, median(v))
		}
	}
	return b.String()
}

// report prints r's table row and returns its machine-readable line.
func (r *result) report() string {
	fmt.Printf("%-22s %5d %22s %22s %22s %10.1f %8.1f\n", r.name, len(r.dump), stat(r.dump), stat(r.frozen), stat(r.restore), r.image, r.rss)
	return fmt.Sprintf("bench name=%s dump_ms=%.1f frozen_ms=%.1f restore_ms=%.1f image_mib=%.1f rss_mib=%.1f",
		r.name, median(r.dump), median(r.frozen), median(r.restore), r.image, r.rss)
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

// run runs bin with args, returns its wall time and standard output, and
// keeps the largest peak RSS in r.
func (r *result) run(bin string, args []string, nullStdio bool) (float64, []byte, error) {
	t0 := time.Now()
	c := exec.Command(bin, args...)
	var so, se bytes.Buffer
	c.Stdout, c.Stderr = &so, &se
	if nullStdio {
		null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			return 0, nil, err
		}
		defer null.Close()
		c.Stdin, c.Stdout, c.Stderr = null, null, null
	}
	if err := c.Run(); err != nil {
		return 0, nil, fmt.Errorf("%s: %v: %s", args[0], err, se.String())
	}
	d := ms(time.Since(t0))
	if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.rss = max(r.rss, float64(ru.Maxrss)/1024)
	}
	return d, so.Bytes(), nil
}

// timeDump runs a dump (or checkpoint) and records its wall time and,
// when e can tell, its frozen time.
func (r *result) timeDump(e engine, img string, args []string) error {
	// Each timed dump starts with no dirty page cache from earlier work
	// (the bench's own build, the images of other workloads), so that its
	// writeback does not compete with the dump's own writes on a 2-CPU VM.
	// (With -load, the load's writer dirties more at once: that is the
	// loaded case.)
	unix.Sync()
	d, out, err := r.run(e.bin, args, e.nullStdio)
	if err != nil {
		return err
	}
	r.dump = append(r.dump, d)
	if e.phases {
		r.addPhases("dump.", out)
	}
	if f, ok := e.frozen(img, out); ok {
		r.frozen = append(r.frozen, f)
	}
	return nil
}

// timeRestore runs a restore and records its time.
func (r *result) timeRestore(e engine, args []string) error {
	d, out, err := r.run(e.bin, args, e.nullStdio)
	if err != nil {
		return err
	}
	if e.phases {
		r.addPhases("restore.", out)
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

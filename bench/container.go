package main

import (
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Container workloads: a busybox rootfs running a shell script (sh -c)
// under runc or crun, or, when mib > 0, this bench binary's workload of mib
// MiB as the container's init, whose memory is verified after each restore
// (SIGUSR1, answer in the rootfs's /tmp/out). ctr-cr checkpoints with
// `ctr-cr checkpoint` and restores with `ctr-cr restore BUNDLE`. With a
// criu and runc as the runtime, a second container of the same kind goes
// through `runc --criu CRIU checkpoint` / `runc restore -d` in
// alternating rounds, for the ratio lines.

// ctInstance is one running container of a workload.
type ctInstance struct {
	dir, rootfs, id, rt, out string
	mib                      int
}

// startContainer makes a bundle for the workload and runs it as id with
// rt.
func startContainer(rt, id, script string, mib int) (*ctInstance, error) {
	dir, err := os.MkdirTemp("", "ctr-cr-bench-ct-")
	if err != nil {
		return nil, err
	}
	c := &ctInstance{dir: dir, rootfs: filepath.Join(dir, "rootfs"), id: id, rt: rt, mib: mib}
	c.out = filepath.Join(c.rootfs, "tmp", "out")
	if err := c.makeBundle(script); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	null, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	defer null.Close()
	run := exec.Command(rt, "run", "-d", "--bundle", dir, id)
	run.Stdin, run.Stdout, run.Stderr = null, null, null
	if err := run.Run(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%s run: %v", rt, err)
	}
	if mib > 0 {
		if err := waitForN(c.out, "ready", 1, 120*time.Second); err != nil {
			c.stop()
			return nil, err
		}
	} else {
		time.Sleep(500 * time.Millisecond)
	}
	return c, nil
}

// makeBundle writes the rootfs and config.json.
func (c *ctInstance) makeBundle(script string) error {
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp"} {
		os.MkdirAll(filepath.Join(c.rootfs, d), 0o755)
	}
	bb, _ := exec.LookPath("busybox")
	if err := copyFile(bb, filepath.Join(c.rootfs, "bin", "busybox")); err != nil {
		return err
	}
	for _, name := range []string{"sh", "sleep", "echo"} {
		os.Symlink("busybox", filepath.Join(c.rootfs, "bin", name))
	}
	if c.mib > 0 {
		self, _ := os.Executable()
		if f, err := elf.Open(self); err == nil {
			dynamic := false
			for _, p := range f.Progs {
				dynamic = dynamic || p.Type == elf.PT_INTERP
			}
			f.Close()
			if dynamic {
				return fmt.Errorf("the bench binary is dynamically linked and cannot run in a busybox rootfs: run it with CGO_ENABLED=0 (make bench does)")
			}
		}
		if err := copyFile(self, filepath.Join(c.rootfs, "bin", "wl")); err != nil {
			return err
		}
		script = fmt.Sprintf("exec /bin/wl workload %d /tmp > /tmp/out 2>&1", c.mib)
	}
	if out, err := exec.Command("runc", "spec", "--bundle", c.dir).CombinedOutput(); err != nil {
		return fmt.Errorf("runc spec: %v: %s", err, out)
	}
	cfgPath := filepath.Join(c.dir, "config.json")
	var cfg map[string]any
	b, _ := os.ReadFile(cfgPath)
	json.Unmarshal(b, &cfg)
	proc := cfg["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = []string{"sh", "-c", script}
	cfg["root"].(map[string]any)["readonly"] = false
	b, _ = json.Marshal(cfg)
	return os.WriteFile(cfgPath, b, 0o644)
}

// stop deletes the container and its bundle.
func (c *ctInstance) stop() {
	exec.Command(c.rt, "delete", "--force", c.id).Run()
	os.RemoveAll(c.dir)
}

// verify checks the restored container: its workload verifies its memory,
// or (busybox) the runtime reports it running.
func (c *ctInstance) verify() error {
	if c.mib == 0 {
		if st, err := exec.Command(c.rt, "state", c.id).Output(); err != nil || !strings.Contains(string(st), `"running"`) {
			return fmt.Errorf("restored container not running: %v %s", err, st)
		}
		return nil
	}
	before := countLines(c.out, "verified ok")
	if o, err := exec.Command(c.rt, "kill", c.id, "USR1").CombinedOutput(); err != nil {
		return fmt.Errorf("%s kill USR1: %v: %s", c.rt, err, o)
	}
	deadline := time.Now().Add(60 * time.Second)
	for countLines(c.out, "verified ok") <= before {
		if time.Now().After(deadline) || countLines(c.out, "verify FAILED") > 0 {
			b, _ := os.ReadFile(c.out)
			return fmt.Errorf("restored container did not verify: %s", b)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// ctEngine checkpoints and restores a container instance.
type ctEngine struct {
	name  string
	cycle func(c *ctInstance, r *result) error
}

// ctrcrContainer is ctr-cr checkpoint / ctr-cr restore -d BUNDLE.
func ctrcrContainer(bin string) ctEngine {
	e := engine{name: "ctr-cr", bin: bin, frozen: frozenFromStats, phases: true}
	return ctEngine{name: "ctr-cr", cycle: func(c *ctInstance, r *result) error {
		img := filepath.Join(c.dir, "checkpoint")
		os.RemoveAll(img)
		if err := r.timeDump(e, img, []string{"checkpoint", "--print-stats", c.id}); err != nil {
			return err
		}
		r.image = dirMiB(img)
		return r.timeRestore(e, []string{"restore", "-d", "--print-stats", c.dir})
	}}
}

// runcCRIUContainer is runc --criu CRIU checkpoint / runc restore -d, the
// images in the bundle, criu's logs and stats in a work directory beside
// them. The runc commands run with /dev/null as stdio: the restored
// container inherits the restore's (as external fds), which must not be
// the bench's pipes.
func runcCRIUContainer(criu string) ctEngine {
	e := engine{name: "runc+criu", bin: "runc", nullStdio: true}
	return ctEngine{name: "runc+criu", cycle: func(c *ctInstance, r *result) error {
		img, work := filepath.Join(c.dir, "criu-img"), filepath.Join(c.dir, "criu-work")
		os.RemoveAll(img)
		os.RemoveAll(work)
		e.frozen = func(string, []byte) (float64, bool) {
			st, err := readCRIUDumpStats(filepath.Join(work, "stats-dump"))
			return float64(st.frozenUs) / 1000, err == nil
		}
		e.logs = func(string) string {
			b, _ := exec.Command("sh", "-c", "tail -n 5 "+work+"/*.log").Output()
			return "\n" + string(b)
		}
		if err := r.timeDump(e, img, []string{"--criu", criu, "checkpoint", "--image-path", img, "--work-path", work, c.id}); err != nil {
			return e.fail(img, err)
		}
		r.image = dirMiB(img)
		if err := r.timeRestore(e, []string{"--criu", criu, "restore", "-d", "--image-path", img, "--work-path", work, "--bundle", c.dir, c.id}); err != nil {
			return e.fail(img, err)
		}
		return nil
	}}
}

// benchContainer runs the container workload once per engine (separate
// containers) in alternating rounds, as benchAlternating does for
// processes, and returns one result per engine, warm-up rounds dropped.
func benchContainer(name, rt, script string, mib, runs int, engines []ctEngine) ([]*result, error) {
	for _, tool := range []string{rt, "runc", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is needed: %v", tool, err)
		}
	}
	var cts []*ctInstance
	defer func() {
		for _, c := range cts {
			c.stop()
		}
	}()
	res := make([]*result, len(engines))
	for k, e := range engines {
		c, err := startContainer(rt, fmt.Sprintf("ctr-cr-bench-%d-%d", os.Getpid(), k), script, mib)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.name, err)
		}
		cts = append(cts, c)
		res[k] = &result{name: name}
		if k > 0 {
			res[k].name = e.name + ":" + name
		}
	}
	for i := 0; i < warmup+runs; i++ {
		for j := range engines {
			k := (i + j) % len(engines)
			if err := engines[k].cycle(cts[k], res[k]); err != nil {
				return nil, fmt.Errorf("%s: %w", engines[k].name, err)
			}
			if err := cts[k].verify(); err != nil {
				return nil, fmt.Errorf("%s: %w", engines[k].name, err)
			}
		}
	}
	for _, r := range res {
		r.dropWarmup()
	}
	return res, nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

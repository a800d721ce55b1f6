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

// benchContainer measures `ctr-cr checkpoint` and `ctr-cr restore BUNDLE`
// of a container run by rt (runc or crun) with a busybox rootfs running script (sh -c). When
// mib > 0 the container runs this bench binary's workload of mib MiB
// instead, whose memory is verified after each restore (SIGUSR1, answer in
// the rootfs's /tmp/out).
func benchContainer(bin, name, rt, script string, mib, runs int) (*result, error) {
	for _, tool := range []string{rt, "runc", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is needed: %v", tool, err)
		}
	}
	r := &result{name: name}
	dir, err := os.MkdirTemp("", "ctr-cr-bench-ct-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp"} {
		os.MkdirAll(filepath.Join(rootfs, d), 0o755)
	}
	bb, _ := exec.LookPath("busybox")
	if err := copyFile(bb, filepath.Join(rootfs, "bin", "busybox")); err != nil {
		return nil, err
	}
	for _, c := range []string{"sh", "sleep", "echo"} {
		os.Symlink("busybox", filepath.Join(rootfs, "bin", c))
	}
	if mib > 0 {
		self, _ := os.Executable()
		if f, err := elf.Open(self); err == nil {
			dynamic := false
			for _, p := range f.Progs {
				dynamic = dynamic || p.Type == elf.PT_INTERP
			}
			f.Close()
			if dynamic {
				return nil, fmt.Errorf("the bench binary is dynamically linked and cannot run in a busybox rootfs: run it with CGO_ENABLED=0 (make bench does)")
			}
		}
		if err := copyFile(self, filepath.Join(rootfs, "bin", "wl")); err != nil {
			return nil, err
		}
		script = fmt.Sprintf("exec /bin/wl workload %d /tmp > /tmp/out 2>&1", mib)
	}
	if out, err := exec.Command("runc", "spec", "--bundle", dir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("runc spec: %v: %s", err, out)
	}
	cfgPath := filepath.Join(dir, "config.json")
	var cfg map[string]any
	b, _ := os.ReadFile(cfgPath)
	json.Unmarshal(b, &cfg)
	proc := cfg["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = []string{"sh", "-c", script}
	cfg["root"].(map[string]any)["readonly"] = false
	b, _ = json.Marshal(cfg)
	os.WriteFile(cfgPath, b, 0o644)
	id := fmt.Sprintf("ctr-cr-bench-%d", os.Getpid())
	defer exec.Command(rt, "delete", "--force", id).Run()
	null, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	defer null.Close()
	run := exec.Command(rt, "run", "-d", "--bundle", dir, id)
	run.Stdin, run.Stdout, run.Stderr = null, null, null
	if err := run.Run(); err != nil {
		return nil, fmt.Errorf("%s run: %v", rt, err)
	}
	out := filepath.Join(rootfs, "tmp", "out")
	if mib > 0 {
		if err := waitForN(out, "ready", 1, 120*time.Second); err != nil {
			return nil, err
		}
	} else {
		time.Sleep(500 * time.Millisecond)
	}
	defer r.dropWarmup()
	ct := engine{name: "ctr-cr", bin: bin, frozen: frozenFromStats, phases: true}
	for i := 0; i < warmup+runs; i++ {
		img := filepath.Join(dir, "checkpoint")
		os.RemoveAll(img)
		if err := r.timeDump(ct, img, []string{"checkpoint", "--print-stats", id}); err != nil {
			return nil, err
		}
		r.image = dirMiB(img)
		if err := r.timeRestore(ct, []string{"restore", "-d", "--print-stats", dir}); err != nil {
			return nil, err
		}
		if mib > 0 {
			before := countLines(out, "verified ok")
			if o, err := exec.Command(rt, "kill", id, "USR1").CombinedOutput(); err != nil {
				return nil, fmt.Errorf("%s kill USR1: %v: %s", rt, err, o)
			}
			deadline := time.Now().Add(60 * time.Second)
			for countLines(out, "verified ok") <= before {
				if time.Now().After(deadline) || countLines(out, "verify FAILED") > 0 {
					b, _ := os.ReadFile(out)
					return nil, fmt.Errorf("restored container did not verify: %s", b)
				}
				time.Sleep(5 * time.Millisecond)
			}
		} else if st, err := exec.Command(rt, "state", id).Output(); err != nil || !strings.Contains(string(st), `"running"`) {
			return nil, fmt.Errorf("restored container not running: %v %s", err, st)
		}
	}
	return r, nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

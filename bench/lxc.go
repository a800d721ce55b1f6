package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// benchLXC times lxc-checkpoint -s and lxc-checkpoint -r of a busybox
// container of LXC (no network, a counting loop) with criuBin as the
// `criu` first on PATH (ctr-cr, or CRIU itself), runs times each after one
// untimed cycle; every restore must leave the container RUNNING with its
// counter going on.
func benchLXC(name, criuBin string, runs int) (*result, error) {
	dir, err := os.MkdirTemp("", "ctr-cr-bench-lxc-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ct := fmt.Sprintf("bench%d", os.Getpid())
	pathDir := filepath.Join(dir, "bin")
	if err := os.Mkdir(pathDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Symlink(criuBin, filepath.Join(pathDir, "criu")); err != nil {
		return nil, err
	}
	env := append(os.Environ(), "PATH="+pathDir+":"+os.Getenv("PATH"))
	run := func(args ...string) error {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = env
		f, err := os.CreateTemp(dir, "out-") // not a pipe: LXC's monitor inherits it
		if err != nil {
			return err
		}
		defer os.Remove(f.Name())
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Run(); err != nil {
			out, _ := os.ReadFile(f.Name())
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	base := filepath.Join(dir, "base.conf")
	if err := os.WriteFile(base, []byte("lxc.net.0.type = empty\nlxc.tty.max = 0\n"), 0o644); err != nil {
		return nil, err
	}
	if err := run("lxc-create", "-P", dir, "-n", ct, "-t", "busybox", "-f", base); err != nil {
		return nil, err
	}
	defer exec.Command("lxc-destroy", "-P", dir, "-n", ct).Run()
	defer exec.Command("lxc-stop", "-P", dir, "-n", ct, "-k").Run()
	if err := fixLXCConfig(filepath.Join(dir, ct)); err != nil {
		return nil, err
	}
	if err := run("lxc-start", "-P", dir, "-n", ct, "-d"); err != nil {
		return nil, err
	}
	state := func() string {
		out, _ := exec.Command("lxc-info", "-P", dir, "-n", ct, "-s").CombinedOutput()
		return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "State:"))
	}
	waitState := func(want string) error {
		deadline := time.Now().Add(10 * time.Second)
		for state() != want {
			if time.Now().After(deadline) {
				return fmt.Errorf("container state %q, want %q", state(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return nil
	}
	if err := waitState("RUNNING"); err != nil {
		return nil, err
	}
	r := &result{name: name}
	for i := 0; i < warmup+runs; i++ {
		img := filepath.Join(dir, fmt.Sprintf("img%d", i))
		if err := os.Mkdir(img, 0o700); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := run("lxc-checkpoint", "-P", dir, "-n", ct, "-s", "-D", img); err != nil {
			return nil, err
		}
		t1 := time.Now()
		if err := waitState("STOPPED"); err != nil {
			return nil, err
		}
		t2 := time.Now()
		if err := run("lxc-checkpoint", "-P", dir, "-n", ct, "-r", "-D", img); err != nil {
			return nil, err
		}
		t3 := time.Now()
		if err := waitState("RUNNING"); err != nil {
			return nil, err
		}
		r.dump = append(r.dump, ms(t1.Sub(t0)))
		r.frozen = append(r.frozen, 0)
		r.restore = append(r.restore, ms(t3.Sub(t2)))
		r.image = dirMiB(img)
	}
	r.dropWarmup()
	return r, nil
}

// fixLXCConfig adapts the busybox template's config to these machines: no
// ttys, and /lib, /lib64 bound from the real directories of merged /usr.
func fixLXCConfig(ctDir string) error {
	p := filepath.Join(ctDir, "config")
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "lxc.tty.max") && !strings.HasSuffix(l, "= 0"):
			continue
		case strings.HasPrefix(l, "lxc.mount.entry = /lib lib "):
			l = strings.Replace(l, "/lib lib ", "/usr/lib lib ", 1)
		case strings.HasPrefix(l, "lxc.mount.entry = /lib64 lib64 "):
			l = strings.Replace(l, "/lib64 lib64 ", "/usr/lib64 lib64 ", 1)
		}
		lines = append(lines, l)
	}
	return os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o644)
}

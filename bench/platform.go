package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// benchPlatforms times podman's checkpoint and restore (the wall time of
// `podman container checkpoint|restore`, which includes podman's own
// work) of a busybox counter (--network none, a tmpfs), with ctr-cr as the
// runtime (bin/runtime/runc, bin/criu first on PATH for podman's version
// probe) and, when criu is given, with runc driving that CRIU, in
// alternating rounds (each engine's container runs the whole time; the
// order rotates), so that a busy machine weighs on both alike. The frozen
// column is what each engine reports in stats-dump. The same for
// containerd (setupContainerd; no frozen column).
func benchPlatforms(bin, criu string, runs int) []string {
	binDir := filepath.Dir(bin)
	engines := []platformEngine{{"ctr-cr", filepath.Join(binDir, "runtime", "runc"), filepath.Join(binDir, "criu")}}
	if criu != "" {
		engines = append(engines, platformEngine{"runc-criu", "/usr/sbin/runc", filepath.Dir(criu)})
	}
	var lines []string
	for _, pf := range []struct {
		name, tool string
		setup      func(platformEngine) (platformCycle, func(), error)
	}{{"podman", "podman", setupPodman}, {"ctrd", "containerd", setupContainerd}} {
		if _, err := exec.LookPath(pf.tool); err != nil {
			lines = append(lines, fmt.Sprintf("bench: %s is not installed: its workloads skipped", pf.tool))
			continue
		}
		var cycles []platformCycle
		var names []string
		for _, e := range engines {
			c, done, err := pf.setup(e)
			if err != nil {
				lines = append(lines, fmt.Sprintf("bench: %s-%s: %v", pf.name, e.name, err))
				continue
			}
			defer done()
			cycles, names = append(cycles, c), append(names, pf.name+"-"+e.name)
		}
		res, err := alternate(names, cycles, runs)
		if err != nil {
			lines = append(lines, fmt.Sprintf("bench: %s: %v", pf.name, err))
			continue
		}
		for _, r := range res {
			lines = append(lines, r.report())
		}
	}
	return lines
}

// platformEngine is a runtime binary for the platform and the directory
// put first on its PATH (where its criu is).
type platformEngine struct{ name, runtime, pathDir string }

// platformCycle checkpoints and restores its container once and returns
// the checkpoint's and the restore's wall time and the frozen time (ms; 0:
// not known).
type platformCycle func() (dump, frozen, restore float64, err error)

// alternate runs warmup+runs rounds of every cycle, the order rotating by
// round, and returns each one's result without the warm-up rounds.
func alternate(names []string, cycles []platformCycle, runs int) ([]*result, error) {
	res := make([]*result, len(cycles))
	for i := range res {
		res[i] = &result{name: names[i]}
	}
	for round := 0; round < warmup+runs; round++ {
		for k := range cycles {
			j := (k + round) % len(cycles)
			unix.Sync()
			d, f, r, err := cycles[j]()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", names[j], err)
			}
			res[j].dump, res[j].restore = append(res[j].dump, d), append(res[j].restore, r)
			if f > 0 {
				res[j].frozen = append(res[j].frozen, f)
			}
		}
	}
	for _, r := range res {
		r.dropWarmup()
	}
	return res, nil
}

// setupPodman runs the counter under podman with the engine's runtime,
// its directory first on podman's PATH; the cycle checkpoints (with
// --print-stats, for the frozen time) and restores it and checks it runs.
func setupPodman(e platformEngine) (platformCycle, func(), error) {
	if _, err := os.Stat(e.runtime); err != nil {
		return nil, nil, err
	}
	env := append(os.Environ(), "PATH="+e.pathDir+":"+os.Getenv("PATH"))
	podman := func(args ...string) ([]byte, float64, error) {
		all := append([]string{"--cgroup-manager", "cgroupfs", "--runtime", e.runtime}, args...)
		c := exec.Command("podman", all...)
		c.Env = env
		t0 := time.Now()
		out, err := c.CombinedOutput()
		if err != nil {
			return out, 0, fmt.Errorf("podman %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return out, ms(time.Since(t0)), nil
	}
	img, rmi, err := podmanBusybox(podman, e.name)
	if err != nil {
		return nil, nil, err
	}
	id := fmt.Sprintf("ctr-cr-bench-%s-%d", e.name, os.Getpid())
	done := func() {
		podman("rm", "-f", "-t", "0", id)
		rmi()
	}
	counter := "i=0; while true; do i=$((i+1)); echo $i > /data/c; echo $i; sleep 0.1; done"
	if _, _, err := podman("run", "-d", "--name", id, "--network", "none", "--tmpfs", "/data",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", img, "sh", "-c", counter); err != nil {
		done()
		return nil, nil, err
	}
	time.Sleep(500 * time.Millisecond)
	cycle := func() (float64, float64, float64, error) {
		out, d, err := podman("container", "checkpoint", "--print-stats", id)
		if err != nil {
			return 0, 0, 0, err
		}
		var st struct {
			Stats []struct {
				Criu struct {
					Frozen float64 `json:"frozen_time"`
				} `json:"criu_statistics"`
			} `json:"container_statistics"`
		}
		frozen := 0.0
		if json.Unmarshal(out, &st) == nil && len(st.Stats) == 1 {
			frozen = st.Stats[0].Criu.Frozen / 1000
		}
		_, r, err := podman("container", "restore", id)
		if err != nil {
			return 0, 0, 0, err
		}
		out, _, err = podman("inspect", "--format", "{{.State.Status}}", id)
		if err != nil || strings.TrimSpace(string(out)) != "running" {
			return 0, 0, 0, fmt.Errorf("restored container not running: %v %s", err, out)
		}
		return d, frozen, r, nil
	}
	return cycle, done, nil
}

// podmanBusybox imports a busybox root file system as a podman image and
// returns its name and its removal.
func podmanBusybox(podman func(args ...string) ([]byte, float64, error), tag string) (string, func(), error) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return "", nil, err
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return "", nil, err
	}
	f, err := os.CreateTemp("", "ctr-cr-bench-rootfs-*.tar")
	if err != nil {
		return "", nil, err
	}
	defer os.Remove(f.Name())
	tw := tar.NewWriter(f)
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "data"} {
		tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755})
	}
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))})
	tw.Write(data)
	for _, a := range []string{"sh", "sleep", "echo"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	}
	tw.Close()
	f.Close()
	name := fmt.Sprintf("localhost/ctr-cr-bench-busybox:%s-%d", tag, os.Getpid())
	if _, _, err := podman("import", f.Name(), name); err != nil {
		return "", nil, err
	}
	return name, func() { podman("rmi", "-f", name) }, nil
}

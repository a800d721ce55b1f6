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
// probe) and, when criu is given, with runc driving that CRIU. The frozen
// column is what each engine reports in stats-dump. The same for
// containerd (benchContainerd; no frozen column).
func benchPlatforms(bin, criu string, runs int) []string {
	if _, err := exec.LookPath("podman"); err != nil {
		return []string{"bench: podman is not installed: platform workloads skipped"}
	}
	binDir := filepath.Dir(bin)
	var lines []string
	engines := []struct{ name, runtime, pathDir string }{
		{"podman-ctr-cr", filepath.Join(binDir, "runtime", "runc"), filepath.Join(binDir, "criu")},
	}
	if criu != "" {
		engines = append(engines, struct{ name, runtime, pathDir string }{"podman-runc-criu", "/usr/sbin/runc", filepath.Dir(criu)})
	}
	for _, e := range engines {
		r, err := benchPodman(e.name, e.runtime, e.pathDir, runs)
		if err != nil {
			lines = append(lines, fmt.Sprintf("bench: %s: %v", e.name, err))
			continue
		}
		lines = append(lines, r.report())
	}
	for _, e := range engines {
		name := strings.Replace(e.name, "podman", "ctrd", 1)
		r, err := benchContainerd(name, e.runtime, e.pathDir, runs)
		if err != nil {
			lines = append(lines, fmt.Sprintf("bench: %s: %v", name, err))
			continue
		}
		lines = append(lines, r.report())
	}
	return lines
}

// benchPodman runs the counter under podman with runtime, pathDir first on
// podman's PATH, and times warmup+runs checkpoint/restore cycles.
func benchPodman(name, runtime, pathDir string, runs int) (*result, error) {
	if _, err := os.Stat(runtime); err != nil {
		return nil, err
	}
	env := append(os.Environ(), "PATH="+pathDir+":"+os.Getenv("PATH"))
	podman := func(args ...string) ([]byte, float64, error) {
		all := append([]string{"--cgroup-manager", "cgroupfs", "--runtime", runtime}, args...)
		c := exec.Command("podman", all...)
		c.Env = env
		t0 := time.Now()
		out, err := c.CombinedOutput()
		if err != nil {
			return out, 0, fmt.Errorf("podman %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return out, ms(time.Since(t0)), nil
	}
	img, cleanup, err := podmanBusybox(podman)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	id := fmt.Sprintf("ctr-cr-bench-%s-%d", name, os.Getpid())
	defer podman("rm", "-f", "-t", "0", id)
	counter := "i=0; while true; do i=$((i+1)); echo $i > /data/c; echo $i; sleep 0.1; done"
	if _, _, err := podman("run", "-d", "--name", id, "--network", "none", "--tmpfs", "/data",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", img, "sh", "-c", counter); err != nil {
		return nil, err
	}
	time.Sleep(500 * time.Millisecond)
	r := &result{name: name}
	defer r.dropWarmup()
	for i := 0; i < warmup+runs; i++ {
		unix.Sync()
		out, d, err := podman("container", "checkpoint", "--print-stats", id)
		if err != nil {
			return nil, err
		}
		r.dump = append(r.dump, d)
		var st struct {
			Stats []struct {
				Criu struct {
					Frozen float64 `json:"frozen_time"`
				} `json:"criu_statistics"`
			} `json:"container_statistics"`
		}
		if json.Unmarshal(out, &st) == nil && len(st.Stats) == 1 {
			r.frozen = append(r.frozen, st.Stats[0].Criu.Frozen/1000)
		}
		if _, d, err = podman("container", "restore", id); err != nil {
			return nil, err
		}
		r.restore = append(r.restore, d)
		out, _, err = podman("inspect", "--format", "{{.State.Status}}", id)
		if err != nil || strings.TrimSpace(string(out)) != "running" {
			return nil, fmt.Errorf("restored container not running: %v %s", err, out)
		}
	}
	return r, nil
}

// podmanBusybox imports a busybox root file system as a podman image and
// returns its name and its removal.
func podmanBusybox(podman func(args ...string) ([]byte, float64, error)) (string, func(), error) {
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
	name := fmt.Sprintf("localhost/ctr-cr-bench-busybox:%d", os.Getpid())
	if _, _, err := podman("import", f.Name(), name); err != nil {
		return "", nil, err
	}
	return name, func() { podman("rmi", "-f", name) }, nil
}

package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// setupContainerd runs the counter under a containerd daemon of the
// bench's own, with the engine's runtime as the runc shim's binary and its
// directory first on the daemon's PATH (where runc finds criu); the cycle
// is `ctr containers checkpoint --task` (pause, checkpoint leaving it
// running, resume), the container removed (untimed), `ctr containers
// restore --live`.
func setupContainerd(e platformEngine) (platformCycle, func(), error) {
	for _, tool := range []string{"containerd", "ctr", "containerd-shim-runc-v2", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, nil, fmt.Errorf("%s is needed: %v", tool, err)
		}
	}
	var undo []func()
	done := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	dir, err := os.MkdirTemp("", "ctr-cr-bench-ctrd-")
	if err != nil {
		return nil, nil, err
	}
	undo = append(undo, func() { os.RemoveAll(dir) })
	state := fmt.Sprintf("/run/ctr-cr-bench-ctrd-%s-%d", e.name, os.Getpid())
	undo = append(undo, func() { os.RemoveAll(state) })
	sock := filepath.Join(state, "containerd.sock")
	cfg := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n",
		filepath.Join(dir, "root"), state, sock)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		done()
		return nil, nil, err
	}
	d := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	d.Env = append(os.Environ(), "PATH="+e.pathDir+":"+os.Getenv("PATH"))
	if err := d.Start(); err != nil {
		done()
		return nil, nil, err
	}
	undo = append(undo, func() {
		d.Process.Signal(syscall.SIGTERM)
		d.Wait()
	})
	ctr := func(args ...string) (float64, error) {
		t0 := time.Now()
		out, err := exec.Command("ctr", append([]string{"--address", sock}, args...)...).CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return ms(time.Since(t0)), nil
	}
	for i := 0; ; i++ {
		if _, err := ctr("version"); err == nil {
			break
		} else if i > 100 {
			done()
			return nil, nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
	arch, err := ociBusybox("localhost/ctr-cr-bench:1")
	if err == nil {
		p := filepath.Join(dir, "image.tar")
		if err = os.WriteFile(p, arch, 0o600); err == nil {
			_, err = ctr("images", "import", p)
		}
	}
	if err != nil {
		done()
		return nil, nil, err
	}
	// runc's state root is the shim's, shared by every daemon: an id of
	// the engine's own
	id := fmt.Sprintf("bench-%s-%d", e.name, os.Getpid())
	remove := func() {
		ctr("tasks", "kill", "-s", "KILL", id)
		for i := 0; i < 100; i++ {
			if _, err := ctr("tasks", "rm", id); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		ctr("containers", "rm", id)
	}
	undo = append(undo, remove)
	counter := "i=0; while true; do i=$((i+1)); echo $i > /data/c; sleep 0.1; done"
	if _, err := ctr("run", "-d", "--null-io", "--runc-binary", e.runtime, "--mount", "type=tmpfs,src=tmpfs,dst=/data,options=rw",
		"localhost/ctr-cr-bench:1", id, "sh", "-c", counter); err != nil {
		done()
		return nil, nil, err
	}
	time.Sleep(500 * time.Millisecond)
	n := 0
	cycle := func() (float64, float64, float64, error) {
		n++
		ref := fmt.Sprintf("localhost/ctr-cr-bench-cp:%d", n)
		dt, err := ctr("containers", "checkpoint", "--task", id, ref)
		if err != nil {
			return 0, 0, 0, err
		}
		remove()
		rt, err := ctr("containers", "restore", "--live", id, ref)
		if err != nil {
			return 0, 0, 0, err
		}
		// containerd 1.6 leaves the task out of a checkpoint whose spec
		// blob it holds already: the next one needs this one gone
		if _, err := ctr("images", "rm", "--sync", ref); err != nil {
			return 0, 0, 0, err
		}
		return dt, 0, rt, nil
	}
	return cycle, done, nil
}

// ociBusybox is an OCI image archive (one uncompressed layer: busybox and
// its sh, sleep, echo) named name, for ctr images import.
func ociBusybox(name string) ([]byte, error) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return nil, err
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "data"} {
		tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755})
	}
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))})
	tw.Write(data)
	for _, a := range []string{"sh", "sleep", "echo"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	}
	tw.Close()
	return testutil.OCIArchive(name, layer.Bytes())
}

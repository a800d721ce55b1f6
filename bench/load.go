package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The -load option: the hosts work is migrated off are busy ones, so the
// loaded case runs n CPU hogs (processes spinning in user space) and one
// writer (a process writing 1 MiB buffers into a file through the page
// cache, no fsync, truncating it every 512 MiB: dirty pages, writeback and
// page-cache allocation all the time) for the whole bench, at the bench's
// own priority.

// startLoad starts the load and returns what stops it (kill and reap).
func startLoad(n int) (func(), error) {
	if n <= 0 {
		return func() {}, nil
	}
	self, _ := os.Executable()
	dir, err := os.MkdirTemp("", "ctr-cr-bench-load-")
	if err != nil {
		return nil, err
	}
	var cmds []*exec.Cmd
	stop := func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
		os.RemoveAll(dir)
	}
	args := [][]string{{"writer-load", filepath.Join(dir, "data")}}
	for i := 0; i < n; i++ {
		args = append(args, []string{"hog-load"})
	}
	for _, a := range args {
		c := exec.Command(self, a...)
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := c.Start(); err != nil {
			stop()
			return nil, err
		}
		cmds = append(cmds, c)
	}
	time.Sleep(200 * time.Millisecond) // the writer is writing
	return stop, nil
}

// hogLoad spins until killed.
func hogLoad() {
	x := uint64(1)
	for {
		x = x*6364136223846793005 + 1442695040888963407
		if x == 0 {
			fmt.Println(x)
		}
	}
}

// writerLoad writes 1 MiB buffers to path until killed, truncating the
// file every 512 MiB.
func writerLoad(path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "writer:", err)
		os.Exit(1)
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for n := 0; ; n++ {
		if n%512 == 0 {
			unix.Ftruncate(int(f.Fd()), 0)
			f.Seek(0, 0)
		}
		buf[0] = byte(n)
		if _, err := f.Write(buf); err != nil {
			fmt.Fprintln(os.Stderr, "writer:", err)
			os.Exit(1)
		}
	}
}

// loadAvg returns /proc/loadavg's first three fields.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	var a, b5, c string
	fmt.Sscan(string(b), &a, &b5, &c)
	return a + " " + b5 + " " + c
}

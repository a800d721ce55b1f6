// Package writeback starts the disk writes of files while they are still
// being written, so that the fsyncs that make them durable later (an image
// is synced before the dumped processes are killed) wait only for what is
// left: sync_file_range(SYNC_FILE_RANGE_WRITE) starts the writeback of a
// file's dirty pages without waiting for it. It never makes anything
// durable by itself and ignores errors: the caller's fsyncs report them.
package writeback

import (
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Period is how often Start goes over the files.
const Period = 20 * time.Millisecond

// Start calls sync_file_range(SYNC_FILE_RANGE_WRITE) on every regular file
// that paths returns, every Period, until the returned stop is called
// (idempotent; it returns once the loop has ended).
func Start(paths func() []string) (stop func()) {
	quit, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		tick := time.NewTicker(Period)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			for _, p := range paths() {
				File(p)
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(quit); <-ended }) }
}

// File starts the writeback of the regular file at p (best effort).
func File(p string) {
	f, err := os.Open(p)
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return
	}
	unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}

// Dir lists the regular files directly in dir, for Start.
func Dir(dir string) func() []string {
	return func() []string {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil
		}
		var out []string
		for _, e := range ents {
			if e.Type().IsRegular() {
				out = append(out, dir+"/"+e.Name())
			}
		}
		return out
	}
}

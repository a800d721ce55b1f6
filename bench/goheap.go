package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// goHeapWorkload is the go-NM workload: a multi-threaded Go program whose
// heap holds mib MiB of live data (1 MiB byte slices plus a pointer-linked
// list the collector has to trace), while worker goroutines, each locked to
// its own OS thread, keep running. On SIGUSR1 it checks every byte of the
// slices and every list node, checks that each worker made progress since
// the last check (the threads run again after a restore), runs a full GC
// and reports "verified ok" or "verify FAILED: ...".
func goHeapWorkload(mibs string) {
	mib, _ := strconv.Atoi(mibs)
	runtime.GOMAXPROCS(4)
	chunks := make([][]byte, mib)
	for i := range chunks {
		c := make([]byte, 1<<20)
		for off := 0; off < len(c); off += 8 {
			binary.LittleEndian.PutUint64(c[off:], goHeapWord(i, off))
		}
		chunks[i] = c
	}
	type node struct {
		next *node
		v    uint64
	}
	const nodes = 100000
	var head *node
	for i := nodes - 1; i >= 0; i-- {
		head = &node{next: head, v: uint64(i) * 0x9e3779b97f4a7c15}
	}
	const workers = 4
	var ticks [workers]atomic.Uint64
	for w := 0; w < workers; w++ {
		go func() {
			runtime.LockOSThread()
			garbage := 0
			for {
				ticks[w].Add(1)
				// a little garbage so the allocator and the
				// collector keep working across dumps and restores
				b := make([]byte, 4096)
				garbage += len(b)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	fmt.Println("ready")
	var last [workers]uint64
	for range sig {
		err := func() error {
			for i, c := range chunks {
				if len(c) != 1<<20 {
					return fmt.Errorf("chunk %d has length %d", i, len(c))
				}
				for off := 0; off < len(c); off += 8 {
					if binary.LittleEndian.Uint64(c[off:]) != goHeapWord(i, off) {
						return fmt.Errorf("chunk %d differs at %d", i, off)
					}
				}
			}
			n := 0
			for p := head; p != nil; p = p.next {
				if p.v != uint64(n)*0x9e3779b97f4a7c15 {
					return fmt.Errorf("list node %d differs", n)
				}
				n++
			}
			if n != nodes {
				return fmt.Errorf("list has %d nodes, not %d", n, nodes)
			}
			// every worker thread runs: its counter moves within a second
			deadline := time.Now().Add(time.Second)
			for w := range ticks {
				for ticks[w].Load() <= last[w] {
					if time.Now().After(deadline) {
						return fmt.Errorf("worker %d stopped", w)
					}
					time.Sleep(time.Millisecond)
				}
				last[w] = ticks[w].Load()
			}
			runtime.GC()
			return nil
		}()
		if err != nil {
			fmt.Println("verify FAILED:", err)
		} else {
			fmt.Println("verified ok")
		}
	}
}

func goHeapWord(chunk, off int) uint64 {
	return (uint64(chunk)<<32 | uint64(off)) ^ 0xa5a5_5a5a_0f0f_f0f0
}

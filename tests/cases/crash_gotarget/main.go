// crash_gotarget is the Go workload of TestCrash_DumpGo: goroutines that
// count, sleep, allocate (the GC runs) and preempt each other (SIGURG),
// with the runtime's handler on every signal, as every Go program. It
// prints "ready", then writes the total count to WORKDIR/count every 10 ms.
//
// With "m0" (TestCrash_DumpGoMainThread) the main goroutine is locked to
// the main thread and keeps it busy in Go code on its small stack, at
// varying depths, beside 3000 parked goroutines with small stacks: thread
// 0 (where the injector makes its boot calls) runs on a goroutine stack
// with little room below its rsp, whose neighbours in memory are the
// stacks of other goroutines, which the garbage collector scans. With
// "m0 dirty" (TestNegative_GoBootFrameNoRoom) it also writes bytes at the
// bottom of its main stack, as C code run deep there by cgo would.
package main

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"
)

var (
	sink   [][]byte
	n      atomic.Uint64
	m0     = len(os.Args) > 2 && os.Args[2] == "m0"
	parked = make(chan struct{})
)

func init() {
	if m0 {
		runtime.LockOSThread() // main runs on the main thread
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Println("usage: crash_gotarget WORKDIR [m0]")
		os.Exit(2)
	}
	runtime.GOMAXPROCS(4)
	for i := 0; i < 8; i++ {
		go func(i int) {
			for {
				n.Add(1)
				if i%2 == 0 {
					time.Sleep(time.Millisecond)
				} else {
					// busy for a while: the scheduler preempts it
					x := 0
					for j := 0; j < 200000; j++ {
						x += j
					}
					_ = x
					time.Sleep(2 * time.Millisecond)
				}
			}
		}(i)
	}
	go func() {
		for {
			sink = append(sink, make([]byte, 64<<10))
			if len(sink) > 64 {
				sink = nil
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if m0 {
		for i := 0; i < 3000; i++ {
			go park(rand.Intn(12))
		}
	}
	if len(os.Args) > 3 && os.Args[3] == "dirty" {
		if err := dirtyStackBottom(); err != nil {
			fmt.Println("FAIL:", err)
			os.Exit(1)
		}
	}
	f, err := os.Create(filepath.Join(os.Args[1], "count"))
	if err != nil {
		fmt.Println("FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for {
		if _, err := f.WriteAt([]byte(fmt.Sprintf("%d 0\n", n.Load())), 0); err != nil {
			fmt.Println("FAIL:", err)
			os.Exit(1)
		}
		if m0 {
			busy(10 * time.Millisecond)
		} else {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// park parks the goroutine at depth d of a recursion, for good.
func park(d int) int {
	var pad [96]byte
	pad[d%96] = byte(d)
	if d > 0 {
		return park(d-1) + int(pad[0])
	}
	<-parked
	return 0
}

var spun int

// busy keeps the (main) thread in Go code for about d, at varying depths
// of its stack.
func busy(d time.Duration) {
	// (time.Now runs on the main stack: seldom)
	for end := time.Now().Add(d); time.Now().Before(end); {
		for i := 0; i < 50; i++ {
			spun += spin(rand.Intn(10))
		}
	}
}

// spin computes for a while at depth d of a recursion.
func spin(d int) int {
	var pad [96]byte
	pad[d%96] = byte(d)
	if d > 0 {
		return spin(d-1) + int(pad[1])
	}
	x := 0
	for j := 0; j < 20000; j++ {
		x += j
	}
	return x
}

// dirtyStackBottom writes bytes into the bottom page of the main stack.
func dirtyStackBottom() error {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return err
	}
	for _, l := range bytes.Split(maps, []byte("\n")) {
		if !bytes.HasSuffix(l, []byte("[stack]")) {
			continue
		}
		var start, end uint64
		if _, err := fmt.Sscanf(string(l), "%x-%x", &start, &end); err != nil {
			return err
		}
		mem, err := os.OpenFile("/proc/self/mem", os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer mem.Close()
		_, err = mem.WriteAt(bytes.Repeat([]byte{0xab}, 64), int64(start+256))
		return err
	}
	return fmt.Errorf("no [stack] in /proc/self/maps")
}

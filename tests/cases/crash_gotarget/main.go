// crash_gotarget is the Go workload of TestCrash_DumpGo: goroutines that
// count, sleep, allocate (the GC runs) and preempt each other (SIGURG),
// with the runtime's handler on every signal, as every Go program. It
// prints "ready", then writes the total count to WORKDIR/count every 10 ms.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"
)

var sink [][]byte

func main() {
	if len(os.Args) < 2 {
		fmt.Println("usage: crash_gotarget WORKDIR")
		os.Exit(2)
	}
	runtime.GOMAXPROCS(4)
	var n atomic.Uint64
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
		time.Sleep(10 * time.Millisecond)
	}
}

// Command b_gogc is a ctr-cr test case: a multi-threaded Go program whose
// runtime (GC, scheduler threads, netpoller, timers) must keep working after
// a checkpoint/restore.
//
// Usage: b_gogc WORKDIR. It builds a long-lived map of slices and records its
// checksum, starts workers that allocate continuously (so the GC runs all the
// time) and a ticker, prints "ready" and polls WORKDIR/go. After go it
// checks, printing "PASS" or "FAIL: reason" as its last line:
//   - the long-lived structure's checksum is unchanged;
//   - runtime.NumGC increases with a forced runtime.GC() and on its own;
//   - every worker goroutine still makes progress;
//   - the time.Ticker still ticks;
//   - GOMAXPROCS and the pid are as before.
package main

import (
	"fmt"
	"hash/crc64"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync/atomic"
	"time"
)

const (
	procs   = 4
	workers = 4
	entries = 50000
)

var (
	progress [workers]atomic.Int64
	ticks    atomic.Int64
	sink     [workers]any // keeps the latest garbage reachable for a while
)

func fail(format string, args ...any) {
	fmt.Printf("FAIL: "+format+"\n", args...)
	os.Exit(1)
}

// buildLongLived returns a map of 50k byte slices with deterministic
// contents, plus a slice of pointers into it (kept alive by the caller).
func buildLongLived() (map[int][]byte, []*[]byte) {
	m := make(map[int][]byte, entries)
	ptrs := make([]*[]byte, 0, entries/10)
	for i := 0; i < entries; i++ {
		b := make([]byte, 16+i%97)
		for j := range b {
			b[j] = byte(i*31 + j*7)
		}
		m[i*7919] = b
		if i%10 == 0 {
			ptrs = append(ptrs, &b)
		}
	}
	return m, ptrs
}

func checksum(m map[int][]byte, ptrs []*[]byte) uint64 {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	tab := crc64.MakeTable(crc64.ECMA)
	var sum uint64
	var kb [8]byte
	for _, k := range keys {
		for i := range kb {
			kb[i] = byte(uint64(k) >> (8 * i))
		}
		sum = crc64.Update(sum, tab, kb[:])
		sum = crc64.Update(sum, tab, m[k])
	}
	for _, p := range ptrs {
		sum = crc64.Update(sum, tab, *p)
	}
	return sum
}

// worker allocates maps and slices forever, checking its own garbage.
func worker(id int) {
	for n := 0; ; n++ {
		m := make(map[int]string, 64)
		for i := 0; i < 64; i++ {
			m[i] = fmt.Sprint(id, ":", n, ":", i)
		}
		s := make([]int, 0, 8)
		for i := 0; i < 1024; i++ {
			s = append(s, i*n)
		}
		if m[63] != fmt.Sprint(id, ":", n, ":", 63) || s[1023] != 1023*n {
			fail("worker %d: fresh allocation corrupted", id)
		}
		sink[id] = m
		progress[id].Add(1)
		if n%64 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// waitFor polls cond every 10 ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: b_gogc WORKDIR")
		os.Exit(2)
	}
	goFile := filepath.Join(os.Args[1], "go")
	runtime.GOMAXPROCS(procs)

	long, ptrs := buildLongLived()
	sumBefore := checksum(long, ptrs)
	pid := os.Getpid()

	for i := 0; i < workers; i++ {
		go worker(i)
	}
	ticker := time.NewTicker(10 * time.Millisecond)
	go func() {
		for range ticker.C {
			ticks.Add(1)
		}
	}()

	// Let the GC run a few times before declaring the state ready.
	var ms runtime.MemStats
	if !waitFor(10*time.Second, func() bool {
		runtime.ReadMemStats(&ms)
		return ms.NumGC >= 3 && ticks.Load() >= 3
	}) {
		fail("setup: NumGC %d, ticks %d", ms.NumGC, ticks.Load())
	}
	fmt.Printf("log: pid %d, NumGC %d, checksum %#x\n", pid, ms.NumGC, sumBefore)
	fmt.Println("ready")

	for {
		if _, err := os.Stat(goFile); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	if got := checksum(long, ptrs); got != sumBefore {
		fail("long-lived checksum %#x, was %#x", got, sumBefore)
	}
	if os.Getpid() != pid {
		fail("pid %d, was %d", os.Getpid(), pid)
	}
	if n := runtime.GOMAXPROCS(0); n != procs {
		fail("GOMAXPROCS %d, was %d", n, procs)
	}

	// A forced GC completes and is counted.
	runtime.ReadMemStats(&ms)
	gc0 := ms.NumGC
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if ms.NumGC <= gc0 {
		fail("runtime.GC() did not increase NumGC (%d)", ms.NumGC)
	}
	// ... and the background GC keeps running on its own.
	gc1 := ms.NumGC
	if !waitFor(10*time.Second, func() bool {
		runtime.ReadMemStats(&ms)
		return ms.NumGC >= gc1+3
	}) {
		fail("background GC stalled: NumGC %d -> %d", gc1, ms.NumGC)
	}

	// Every worker and the ticker make progress.
	var before [workers]int64
	for i := range before {
		before[i] = progress[i].Load()
	}
	t0 := ticks.Load()
	if !waitFor(10*time.Second, func() bool {
		for i := range before {
			if progress[i].Load() < before[i]+10 {
				return false
			}
		}
		return ticks.Load() >= t0+5
	}) {
		for i := range before {
			fmt.Printf("log: worker %d: %d -> %d\n", i, before[i], progress[i].Load())
		}
		fail("goroutines stalled (ticks %d -> %d)", t0, ticks.Load())
	}

	// The long-lived structure is still intact after all that GC work.
	if got := checksum(long, ptrs); got != sumBefore {
		fail("long-lived checksum after GC %#x, was %#x", got, sumBefore)
	}
	runtime.KeepAlive(long)
	fmt.Println("PASS")
	os.Exit(0)
}

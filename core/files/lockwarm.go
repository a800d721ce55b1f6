package files

import (
	"os"
	"sync"
	"time"
)

// Keeping /proc/locks warm. Every read(2) of /proc/locks takes the
// kernel's file_rwsem for writing (percpu_down_write), which waits for an
// RCU grace period (rcu_sync_enter) unless the semaphore's rcu_sync is
// still active from a writer that left less than a grace period ago:
// measured here, a read after an idle spell takes 5-16 ms, a read within
// ~20 ms of the previous one 25-40 µs. The dump's own read has to come
// after the tree is frozen (its locks may change until then), so the
// grace period is waited for inside the frozen time; a warming read
// started when the dump starts, and repeated every few milliseconds, puts
// that wait before the freeze: the dump's read then finds the rcu_sync
// active and takes microseconds. The warming reads' contents are thrown
// away; they change nothing (/proc/locks is read-only), and each holds
// the semaphore for tens of microseconds, as any reader of /proc/locks
// does.

// lockWarmPeriod is the pause between warming reads: well below the
// grace periods seen here (5-30 ms), so that the rcu_sync never goes idle
// in between, at ~1% of a CPU.
const lockWarmPeriod = 3 * time.Millisecond

var lockWarm struct {
	mu   sync.Mutex
	refs int
	stop chan struct{}
}

// WarmLocks starts keeping /proc/locks warm (see above) until every
// caller has called the release it returns (releasing twice is harmless).
// Call it when a dump starts, before the tree is frozen.
func WarmLocks() (release func()) {
	lockWarm.mu.Lock()
	if lockWarm.refs == 0 {
		lockWarm.stop = make(chan struct{})
		go warmLocksLoop(lockWarm.stop)
	}
	lockWarm.refs++
	lockWarm.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			lockWarm.mu.Lock()
			if lockWarm.refs--; lockWarm.refs == 0 {
				close(lockWarm.stop)
			}
			lockWarm.mu.Unlock()
		})
	}
}

// warmLocksLoop reads the first page of /proc/locks every
// lockWarmPeriod until stop is closed.
func warmLocksLoop(stop chan struct{}) {
	buf := make([]byte, 4096)
	for {
		if f, err := os.Open("/proc/locks"); err == nil {
			f.Read(buf)
			f.Close()
		} else {
			return // nothing to warm
		}
		select {
		case <-stop:
			return
		case <-time.After(lockWarmPeriod):
		}
	}
}

// WarmLocks keeps /proc/locks warm (the package's WarmLocks) until the
// table's listing has been read (PrefetchLocks) or StopWarmLocks is
// called.
func (t *Table) WarmLocks() {
	t.locks.unwarm = WarmLocks()
}

// StopWarmLocks ends the table's WarmLocks, if it is still on.
func (t *Table) StopWarmLocks() {
	if t.locks.unwarm != nil {
		t.locks.unwarm()
	}
}

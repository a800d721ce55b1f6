package files

import (
	"testing"
	"time"
)

// TestWarmLocksRefs: the warming loop runs while any caller holds it and
// stops when the last releases it; releasing twice counts once.
func TestWarmLocksRefs(t *testing.T) {
	a := WarmLocks()
	b := WarmLocks()
	lockWarm.mu.Lock()
	stop := lockWarm.stop
	if lockWarm.refs != 2 {
		t.Fatalf("refs = %d, want 2", lockWarm.refs)
	}
	lockWarm.mu.Unlock()
	a()
	a()
	select {
	case <-stop:
		t.Fatal("stopped while b still holds it")
	case <-time.After(10 * time.Millisecond):
	}
	b()
	select {
	case <-stop:
	case <-time.After(time.Second):
		t.Fatal("not stopped after the last release")
	}
	tb := NewTable()
	tb.WarmLocks()
	tb.PrefetchLocks()
	if ls := <-tb.locks.listing; ls.err != nil {
		t.Fatalf("listing: %v", ls.err)
	}
	tb.StopWarmLocks()
	lockWarm.mu.Lock()
	defer lockWarm.mu.Unlock()
	if lockWarm.refs != 0 {
		t.Fatalf("refs = %d after the table's listing and stop, want 0", lockWarm.refs)
	}
}

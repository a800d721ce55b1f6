package timing

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// Trace prints, when its environment variable is set, how long after its
// start each step of an operation ended, and since the step before, on
// stderr: where an operation's time goes, for a developer (the ...Ms
// stats are the figures users and the bench read). When off, a step costs
// one branch.
type Trace struct {
	name     string
	on       bool
	mu       sync.Mutex
	t0, last time.Time
}

// NewTrace returns a trace named name, on when env is set, started now.
func NewTrace(name, env string) *Trace {
	now := time.Now()
	return &Trace{name: name, on: os.Getenv(env) != "", t0: now, last: now}
}

// Start restarts the clock (the operation's start, e.g. the freeze).
func (t *Trace) Start() {
	if !t.on {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.t0 = time.Now()
	t.last = t.t0
}

// Step prints the step that just ended.
func (t *Trace) Step(format string, args ...any) {
	if !t.on {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	fmt.Fprintf(os.Stderr, "%s: %8.2f ms (+%6.2f) %s\n", t.name, Ms(now.Sub(t.t0)), Ms(now.Sub(t.last)), fmt.Sprintf(format, args...))
	t.last = now
}

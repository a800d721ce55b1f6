package dump

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// frozenTrace prints, with CTRCR_DEBUG_FROZEN set, how long after the
// freeze each step of a dump ended (to stderr): where the frozen time goes.
var (
	frozenTraceOn = os.Getenv("CTRCR_DEBUG_FROZEN") != ""
	frozenTraceMu sync.Mutex
	frozenT0      time.Time
	frozenLast    time.Time
)

// traceStart marks the freeze.
func traceStart() {
	if !frozenTraceOn {
		return
	}
	frozenTraceMu.Lock()
	defer frozenTraceMu.Unlock()
	frozenT0, frozenLast = time.Now(), time.Now()
}

// trace prints the step that just ended, with the time since the freeze
// and since the step before.
func trace(format string, args ...any) {
	if !frozenTraceOn {
		return
	}
	frozenTraceMu.Lock()
	defer frozenTraceMu.Unlock()
	now := time.Now()
	fmt.Fprintf(os.Stderr, "frozen: %7.2f ms (+%6.2f) %s\n", ms(now.Sub(frozenT0)), ms(now.Sub(frozenLast)), fmt.Sprintf(format, args...))
	frozenLast = now
}

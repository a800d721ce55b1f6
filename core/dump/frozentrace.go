package dump

import "github.com/ctr-cr/ctr-cr/internal/timing"

// frozenTrace prints, with CTRCR_DEBUG_FROZEN set, how long after the
// freeze each step of a dump ended: where the frozen time goes.
var frozenTrace = timing.NewTrace("frozen", "CTRCR_DEBUG_FROZEN")

// traceStart marks the freeze.
func traceStart() { frozenTrace.Start() }

// trace prints the step that just ended.
func trace(format string, args ...any) { frozenTrace.Step(format, args...) }

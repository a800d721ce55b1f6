package pageserver

import "github.com/ctr-cr/ctr-cr/internal/timing"

// debugTrace (CTRCR_DEBUG_PAGESERVER=1) prints on stderr when each file's
// first and last bytes went out or came in and when it was confirmed or
// synced, in ms since the process started: where a transfer's time goes.
var debugTrace = timing.NewTrace("page server", "CTRCR_DEBUG_PAGESERVER")

func dbg(format string, a ...any) { debugTrace.Step(format, a...) }

package pageserver

import (
	"fmt"
	"os"
	"time"
)

// debugOn (CTRCR_DEBUG_PAGESERVER=1) prints on stderr when each file's
// first and last bytes went out or came in and when it was confirmed or
// synced, in ms since the process started: where a transfer's time goes.
var debugOn = os.Getenv("CTRCR_DEBUG_PAGESERVER") != ""

var debugT0 = time.Now()

func dbg(format string, a ...any) {
	if debugOn {
		fmt.Fprintf(os.Stderr, "page server: %8.1f ms: %s\n", float64(time.Since(debugT0).Microseconds())/1000, fmt.Sprintf(format, a...))
	}
}

// Package timing holds the one conversion behind the phase timings that
// dump, restore, the container layer and the bench report (the ...Ms
// fields of their stats): a duration in milliseconds, as a float64 with
// microsecond resolution.
package timing

import "time"

// Ms is d in milliseconds, truncated to whole microseconds.
func Ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

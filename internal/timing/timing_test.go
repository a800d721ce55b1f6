package timing

import (
	"testing"
	"time"
)

func TestMs(t *testing.T) {
	for d, want := range map[time.Duration]float64{0: 0, 1500 * time.Microsecond: 1.5, 2*time.Second + 999: 2000, -time.Millisecond: -1} {
		if got := Ms(d); got != want {
			t.Errorf("Ms(%v) = %v, want %v", d, got, want)
		}
	}
}

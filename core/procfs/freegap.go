package procfs

import (
	"errors"
	"fmt"
)

// gapGuard is the free page kept on each side of a FreeGap address: a
// mapping put there never touches (nor merges with) another, so it stays
// one line of /proc/PID/maps of its own.
const gapGuard = 4096

// FreeGap returns an address where size bytes can be mapped in pid with
// MAP_FIXED_NOREPLACE, chosen before the mapping is made so that it can be
// written down first (a crash of the mapper then leaves a mapping whose
// place is known, see internal/oprec). It is where the kernel's top-down
// allocator would look first: the highest gap below the mappings under
// the main stack (never the stack's growth room), with a free page on
// each side.
func FreeGap(pid int, size uint64) (uint64, error) {
	vmas, err := ReadMaps(pid)
	if err != nil {
		return 0, err
	}
	return freeGapIn(vmas, size)
}

// freeGapIn is FreeGap on parsed maps.
func freeGapIn(vmas []VMA, size uint64) (uint64, error) {
	size = (size + 4095) &^ 4095
	if len(vmas) == 0 || size == 0 {
		return 0, errors.New("free gap: no mappings")
	}
	// the ceiling: the lowest mapping among those right under the stack
	// (its neighbours above are the stack, vdso and vvar)
	top := len(vmas) - 1
	for i, v := range vmas {
		if v.Path == "[stack]" {
			top = i - 1
			break
		}
	}
	for i := top; i >= 1; i-- {
		lo, hi := vmas[i-1].End, vmas[i].Start
		if hi > lo && hi-lo >= size+2*gapGuard {
			return hi - gapGuard - size, nil
		}
	}
	return 0, fmt.Errorf("free gap: no room for %d bytes", size)
}

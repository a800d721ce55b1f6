package dump

import (
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// exitedDuringCopy reports whether process pid of a pre-dump round has
// exited (gone, a zombie, or its pid another process's) since the tree was
// released: its memory copy failed because it no longer has any. A
// pre-dump round leaves such a process out (its pages are never needed:
// the final dump does not find it); a shell's short-lived children (sleep,
// a pipeline's parts) exit so while a container's memory is copied.
func exitedDuringCopy(pid int) bool {
	st, err := procfs.ReadStat(pid)
	return err != nil || st.State == 'Z' || st.State == 'X'
}

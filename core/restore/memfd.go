package restore

import (
	"strings"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// sharedMayWrite reports whether a shared mapping of the inode of memfd f,
// in any process of the image, may write (VM_MAYWRITE, "mw" in VmFlags).
func (t *tree) sharedMayWrite(f *imagepb.FileEntry) bool {
	for _, p := range t.procs {
		if p.mm == nil {
			continue
		}
		for _, v := range p.mm.Vmas {
			if !v.Shared || !strings.Contains(" "+v.VmFlags+" ", " mw ") {
				continue
			}
			if e, err := t.opener.Entry(v.FileId); err == nil && e.Dev == f.Dev && e.Ino == f.Ino {
				return true
			}
		}
	}
	return false
}

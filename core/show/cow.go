package show

import (
	"fmt"
	"io"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// showCow prints the pages pid shares copy-on-write with its parent (in
// the parent's image) and those its children share that it has no longer
// (pages-cowbase-PID.img).
func showCow(w io.Writer, img *image.Reader, pid int, mm *imagepb.MmEntry) error {
	var shared uint64
	for _, r := range mm.CowParentRuns {
		shared += r.NrPages
	}
	if shared > 0 {
		fmt.Fprintf(w, "  memory: %d page(s) = %s shared with the parent since the fork (copy-on-write; not in this process's pages)\n", shared, bytes(shared*4096))
	}
	name := fmt.Sprintf("cowbase-%d", pid)
	if !img.Has("pagemap-" + name + ".img") {
		return nil
	}
	_, runs, err := img.Pagemap(name)
	if err != nil {
		return err
	}
	var base uint64
	for _, r := range runs {
		base += r.NrPages
	}
	fmt.Fprintf(w, "  memory: %d page(s) = %s its children share that it wrote since (pages-%s.img)\n", base, bytes(base*4096), name)
	return nil
}

package restore

import (
	"fmt"
	"io"
	"strconv"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/memory"
)

// chainFill is where the pages of one process that its image leaves to
// the parent images of a pre-copy chain are (issue 16), resolved and
// checked before anything is restored.
type chainFill struct {
	pid    int
	levels []*image.Reader // the parents, nearest first
	pieces []memory.Piece
}

// checkTip refuses a pre-dump image as what is restored and opens the
// chain of parents of img, validating every image of it.
func checkTip(img *image.Reader) ([]*image.Reader, error) {
	inv := img.Inventory()
	if inv.PreDump {
		return nil, fmt.Errorf("%s is a pre-dump image (memory only): restore the image of the final `ctr-cr dump --parent-path`", img.Dir())
	}
	return image.OpenChain(img)
}

// attachChain resolves, for every live process, the pages its
// parentmap-<pid>.img says are in the parent images.
func attachChain(procs []*proc, img *image.Reader, chain []*image.Reader) error {
	for _, p := range procs {
		if p.pst.Zombie {
			continue
		}
		pid := int(p.pst.Pid)
		want, err := img.Parentmap(pid)
		if err != nil {
			return err
		}
		if len(want) == 0 {
			continue
		}
		if len(chain) == 0 {
			return fmt.Errorf("parentmap-%d.img: %w: pages in a parent image, but there is none", pid, image.ErrCorrupt)
		}
		if err := memory.CheckLayout(p.mm.Vmas, want); err != nil {
			return fmt.Errorf("parentmap-%d.img: %w", pid, err)
		}
		if both := memory.SpansOf(p.pmap).Intersect(memory.SpansOf(want)); len(both) > 0 {
			return fmt.Errorf("parentmap-%d.img: %w: pages %#x-%#x are also in pages-%d.img", pid, image.ErrCorrupt, both[0].Start, both[0].End, pid)
		}
		levels := make([]memory.ChainLevel, len(chain))
		for i, r := range chain {
			levels[i].Dir = r.Dir()
			name := strconv.Itoa(pid)
			if r.Has("pagemap-" + name + ".img") {
				if _, levels[i].Local, err = r.Pagemap(name); err != nil {
					return err
				}
			}
			if levels[i].Parent, err = r.Parentmap(pid); err != nil {
				return err
			}
		}
		pieces, err := memory.ResolveChain(want, levels)
		if err != nil {
			return fmt.Errorf("%w: pid %d: %w", image.ErrChain, pid, err)
		}
		p.chain = &chainFill{pid: pid, levels: chain, pieces: pieces}
	}
	return nil
}

// fill writes the pages from the parent images to dst.
func (c *chainFill) fill(dst io.WriterAt) (uint64, error) {
	readers := make([]io.ReaderAt, len(c.levels))
	used := map[int]bool{}
	for _, pc := range c.pieces {
		used[pc.Level] = true
	}
	for l := range used {
		pg, err := c.levels[l].OpenPages(strconv.Itoa(c.pid))
		if err != nil {
			return 0, err
		}
		defer pg.Close()
		readers[l] = pg
	}
	return memory.FillPieces(dst, c.pieces, readers)
}

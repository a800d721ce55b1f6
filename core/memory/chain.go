package memory

import (
	"fmt"
	"io"
	"slices"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// ChainLevel is one ancestor image of a pre-copy chain, for one process:
// the runs its pages file holds (in file order) and the runs it leaves to
// its own parent.
type ChainLevel struct {
	Dir    string                  // for errors
	Local  []*imagepb.PagemapEntry // pagemap runs, in pages-file order
	Parent []*imagepb.PagemapEntry // parentmap runs
}

// Piece is a run of pages to copy from the pages file of chain level
// Level, at byte offset Off.
type Piece struct {
	Vaddr, NrPages uint64
	Level          int
	Off            int64
}

// ResolveChain finds where each page of want (the tip's parentmap runs)
// is: in levels[0]'s pages file, or in its parent's (levels[1]), and so on.
// A page that no level holds, or that a level says is in a parent the
// chain does not have, is an error: the image chain is inconsistent.
// The pieces come sorted by level and file offset (sequential reads).
func ResolveChain(want []*imagepb.PagemapEntry, levels []ChainLevel) ([]Piece, error) {
	todo := SpansOf(want)
	var out []Piece
	for li, l := range levels {
		if len(todo) == 0 {
			break
		}
		var off int64
		type located struct {
			Span
			off int64
		}
		var local []located
		for _, r := range l.Local {
			local = append(local, located{Span{r.Vaddr, r.Vaddr + r.NrPages*PageSize}, off})
			off += int64(r.NrPages * PageSize)
		}
		slices.SortFunc(local, func(a, b located) int {
			if a.Start < b.Start {
				return -1
			}
			return 1
		})
		// pages of todo in this level's pages file
		var found Spans
		i := 0
		for _, t := range todo {
			for i < len(local) && local[i].End <= t.Start {
				i++
			}
			for k := i; k < len(local) && local[k].Start < t.End; k++ {
				lo, hi := max(t.Start, local[k].Start), min(t.End, local[k].End)
				out = append(out, Piece{Vaddr: lo, NrPages: (hi - lo) / PageSize, Level: li,
					Off: local[k].off + int64(lo-local[k].Start)})
				found = append(found, Span{lo, hi})
			}
		}
		rest := todo.Subtract(found.normalize())
		if missing := rest.Subtract(SpansOf(l.Parent)); len(missing) > 0 {
			return nil, fmt.Errorf("pages %#x-%#x are said to be in parent image %s, which does not hold them", missing[0].Start, missing[0].End, l.Dir)
		}
		todo = rest
	}
	if len(todo) > 0 {
		return nil, fmt.Errorf("pages %#x-%#x are said to be in a parent image beyond the last one of the chain", todo[0].Start, todo[0].End)
	}
	slices.SortStableFunc(out, func(a, b Piece) int {
		if a.Level != b.Level {
			return a.Level - b.Level
		}
		if a.Off < b.Off {
			return -1
		}
		if a.Off > b.Off {
			return 1
		}
		return 0
	})
	return out, nil
}

// FillPieces copies the pieces from the pages files of their levels
// (pages[level]) to dst at their addresses; it returns the pages written.
func FillPieces(dst io.WriterAt, pieces []Piece, pages []io.ReaderAt) (uint64, error) {
	var need uint64
	for _, p := range pieces {
		need = max(need, p.NrPages*PageSize)
	}
	buf := getBuf(need)
	defer putBuf(buf)
	var total uint64
	for _, p := range pieces {
		if p.Level < 0 || p.Level >= len(pages) {
			return total, fmt.Errorf("piece at %#x: no chain level %d", p.Vaddr, p.Level)
		}
		left, addr, off := p.NrPages*PageSize, p.Vaddr, p.Off
		for left > 0 {
			n := min(left, uint64(len(buf)))
			b := buf[:n]
			if _, err := pages[p.Level].ReadAt(b, off); err != nil {
				return total, fmt.Errorf("read parent pages at offset %d: %w", off, err)
			}
			if _, err := dst.WriteAt(b, int64(addr)); err != nil {
				return total, fmt.Errorf("write %d bytes at %#x: %w", n, addr, err)
			}
			left -= n
			addr += n
			off += int64(n)
			total += n / PageSize
		}
	}
	return total, nil
}

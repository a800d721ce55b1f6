package show

import (
	"fmt"
	"io"
	"strconv"

	"github.com/ctr-cr/ctr-cr/core/image"
)

// chainSummary prints what a pre-copy chain (issue 16) adds to the summary
// of img: its parents, validated, each with its pages; for a pre-dump image
// (which has no process state to show) its pages per process, and then
// done is true.
func chainSummary(img *image.Reader, w io.Writer) (done bool, err error) {
	inv := img.Inventory()
	if inv.PreDump {
		fmt.Fprintf(w, "pre-dump image (memory only, not restorable by itself)\n")
		if tr := inv.PremigTracker; tr != nil {
			fmt.Fprintf(w, "dirty tracking armed: held by pid %d for %d process(es)\n", tr.HolderPid, len(tr.Tracks))
		}
		tree, err := img.Pstree()
		if err != nil {
			return true, err
		}
		for _, p := range tree {
			if p.Zombie {
				continue
			}
			own, parent, err := pagesOf(img, int(p.Pid))
			if err != nil {
				return true, err
			}
			fmt.Fprintf(w, "process %d: %d page(s) in this image, %d in the parent\n", p.Pid, own, parent)
		}
	}
	if inv.ParentPath == "" {
		return inv.PreDump, nil
	}
	chain, err := image.OpenChain(img)
	if err != nil {
		return true, err
	}
	fmt.Fprintf(w, "pre-copy chain: %d parent image(s), each checked:\n", len(chain))
	for i, p := range chain {
		var own, parent uint64
		tree, err := p.Pstree()
		if err != nil {
			return true, err
		}
		for _, e := range tree {
			o, pa, err := pagesOf(p, int(e.Pid))
			if err != nil {
				return true, err
			}
			own, parent = own+o, parent+pa
		}
		kind := "dump"
		if p.Inventory().PreDump {
			kind = "pre-dump"
		}
		fmt.Fprintf(w, "  %d. %s (%s): %d page(s), %d left to its parent\n", i+1, p.Dir(), kind, own, parent)
	}
	return inv.PreDump, nil
}

// pagesOf counts the pages of pid in img's pages file and in its parent.
func pagesOf(img *image.Reader, pid int) (own, parent uint64, err error) {
	name := strconv.Itoa(pid)
	if img.Has("pagemap-" + name + ".img") {
		_, runs, err := img.Pagemap(name)
		if err != nil {
			return 0, 0, err
		}
		for _, r := range runs {
			own += r.NrPages
		}
	}
	runs, err := img.Parentmap(pid)
	if err != nil {
		return 0, 0, err
	}
	for _, r := range runs {
		parent += r.NrPages
	}
	return own, parent, nil
}

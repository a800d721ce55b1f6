package memory

import (
	"slices"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Span is a range of addresses [Start, End), page-aligned.
type Span struct{ Start, End uint64 }

// Spans is a sorted list of non-overlapping, non-adjacent spans.
type Spans []Span

// SpansOf returns the pagemap runs as Spans, sorted and merged.
func SpansOf(runs []*imagepb.PagemapEntry) Spans {
	s := make(Spans, 0, len(runs))
	for _, r := range runs {
		s = append(s, Span{r.Vaddr, r.Vaddr + r.NrPages*PageSize})
	}
	return s.normalize()
}

// normalize sorts s and merges overlapping or adjacent spans.
func (s Spans) normalize() Spans {
	slices.SortFunc(s, func(a, b Span) int {
		switch {
		case a.Start < b.Start:
			return -1
		case a.Start > b.Start:
			return 1
		}
		return 0
	})
	out := s[:0]
	for _, x := range s {
		if x.End <= x.Start {
			continue
		}
		if n := len(out); n > 0 && x.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, x.End)
			continue
		}
		out = append(out, x)
	}
	return out
}

// Union returns the spans covered by s or t.
func (s Spans) Union(t Spans) Spans {
	u := append(append(Spans{}, s...), t...)
	return u.normalize()
}

// Intersect returns the spans covered by both s and t.
func (s Spans) Intersect(t Spans) Spans {
	var out Spans
	i, j := 0, 0
	for i < len(s) && j < len(t) {
		lo, hi := max(s[i].Start, t[j].Start), min(s[i].End, t[j].End)
		if lo < hi {
			out = append(out, Span{lo, hi})
		}
		if s[i].End < t[j].End {
			i++
		} else {
			j++
		}
	}
	return out
}

// Subtract returns the spans covered by s and not by t.
func (s Spans) Subtract(t Spans) Spans {
	var out Spans
	j := 0
	for _, x := range s {
		start := x.Start
		for j < len(t) && t[j].End <= start {
			j++
		}
		k := j
		for k < len(t) && t[k].Start < x.End {
			if t[k].Start > start {
				out = append(out, Span{start, t[k].Start})
			}
			start = max(start, t[k].End)
			k++
		}
		if start < x.End {
			out = append(out, Span{start, x.End})
		}
	}
	return out
}

// Pages returns the number of pages s covers.
func (s Spans) Pages() uint64 {
	var n uint64
	for _, x := range s {
		n += (x.End - x.Start) / PageSize
	}
	return n
}

// Runs returns s as pagemap runs.
func (s Spans) Runs() []*imagepb.PagemapEntry {
	out := make([]*imagepb.PagemapEntry, len(s))
	for i, x := range s {
		out[i] = &imagepb.PagemapEntry{Vaddr: x.Start, NrPages: (x.End - x.Start) / PageSize}
	}
	return out
}

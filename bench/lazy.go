package main

import (
	"fmt"
)

// benchLazy compares, on the anonymous-memory workload of mib MiB, an
// eager restore with restore --lazy-pages (issue 16): the time until the
// tree runs (ctr-cr's total_ms) and the time until its last page is in
// (total_ms + lazy_last_page_ms; for the eager restore the two are one).
// Both restores are -d; the workload verifies its memory after each.
func benchLazy(bin string, mib, runs int) ([]string, error) {
	eager := ctrcrEngine(bin, nil)
	lz := ctrcrEngine(bin, nil)
	lz.name = "lazy"
	lz.restore = func(img string) []string {
		return []string{"restore", "-D", img, "-d", "--print-stats", "--lazy-pages"}
	}
	name := fmt.Sprintf("anon-%dM", mib)
	res, err := benchAlternating(name, []engine{eager, lz}, []string{"workload", fmt.Sprint(mib)}, 1, runs)
	if err != nil {
		return nil, err
	}
	e, l := res[0].phaseMedians(), res[1].phaseMedians()
	fmt.Printf("lazy restore %s: eager restore %.1f ms; lazy: running after %.1f ms, last page in after %.1f ms (%.0f pages on fault, %.0f in the background)\n",
		name, e["restore.total_ms"], l["restore.total_ms"], l["restore.total_ms"]+l["restore.lazy_last_page_ms"],
		l["restore.lazy_pages_on_fault"], l["restore.lazy_pages_background"])
	return []string{fmt.Sprintf("bench name=lazy-%s eager_restore_ms=%.1f lazy_running_ms=%.1f lazy_last_page_ms=%.1f eager_wall_ms=%.1f lazy_wall_ms=%.1f",
		name, e["restore.total_ms"], l["restore.total_ms"], l["restore.total_ms"]+l["restore.lazy_last_page_ms"],
		median(res[0].restore), median(res[1].restore))}, nil
}

// phaseMedians returns the medians of r's --print-stats figures (warm-up
// cycles dropped).
func (r *result) phaseMedians() map[string]float64 {
	m := map[string]float64{}
	for k, v := range r.phases {
		if v = v[min(warmup, len(v)):]; len(v) > 0 {
			m[k] = median(v)
		}
	}
	return m
}

package image

import "io"

// Raw returns the pages file for reads at any offset that the deferred
// checksum does not see: for a reader that must place some pages early,
// out of order (restore's copy-on-write staging). The in-order pass of
// ReadAt and Verify must still follow, and nothing read through Raw may
// let the task run before Verify succeeded.
func (p *Pages) Raw() io.ReaderAt { return p.f }

package writeback

import "io"

// WriteMax is the most written to an image file by one write(2). The
// page cache takes a write in folios as large as the write (up to 2 MiB):
// on a VM whose free memory goes back to the host (virtio balloon free
// page reporting), 2 MiB blocks come back cold, and 1.2 GB written 2 MiB
// at a time took up to 4 s (0.3 s only right after such a file was
// removed) where 512 KiB at a time took 0.3-0.6 s every time (dd, the
// test VM); see docs/performance.md. (Not for splice(2) into the file:
// capped the same way, a 1 GiB dump took 1.26x the time.)
const WriteMax = 512 << 10

// Write writes b to w in writes of at most WriteMax bytes; it returns
// how much was written, as io.Writer does.
func Write(w io.Writer, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := w.Write(b[n:min(len(b), n+WriteMax)])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

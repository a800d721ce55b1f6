// Package extents finds the data of a sparse file (SEEK_DATA/SEEK_HOLE)
// and checks extent lists read back from an image, so that files with
// holes are saved by the data they hold, never by their apparent size: a
// `truncate -s 2G` file holds nothing to copy.
package extents

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Extent is a run of data [Off, Off+Len) of a file.
type Extent struct {
	Off, Len int64
}

// Data lists the data extents of the first size bytes of fd, and their
// total length. A file system without holes reports the whole file as data.
// fd's offset is moved.
func Data(fd int, size int64) ([]Extent, int64, error) {
	var out []Extent
	var total int64
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("SEEK_DATA at %d: %w", off, err)
		}
		if d >= size {
			break
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return nil, 0, fmt.Errorf("SEEK_HOLE at %d: %w", d, err)
		}
		h = min(h, size)
		if h <= d {
			return nil, 0, fmt.Errorf("SEEK_HOLE at %d gave %d", d, h)
		}
		out = append(out, Extent{Off: d, Len: h - d})
		total += h - d
		off = h
	}
	return out, total, nil
}

// Check verifies an extent list read from an image for a file of size
// bytes holding data bytes of data: extents in order, not overlapping,
// not empty, inside the file, adding up to data.
func Check(exts []Extent, size, data int64) error {
	if size < 0 || data < 0 || data > size {
		return fmt.Errorf("size %d with %d bytes of data", size, data)
	}
	var end, total int64
	for _, e := range exts {
		if e.Off < end || e.Len <= 0 || e.Off > size || e.Len > size-e.Off {
			return fmt.Errorf("bad data extent %d+%d (size %d)", e.Off, e.Len, size)
		}
		end = e.Off + e.Len
		total += e.Len
	}
	if total != data {
		return fmt.Errorf("extents hold %d bytes, %d given", total, data)
	}
	return nil
}

// Format writes exts as "off+len,off+len,...".
func Format(exts []Extent) string {
	var b strings.Builder
	for i, e := range exts {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(e.Off, 10))
		b.WriteByte('+')
		b.WriteString(strconv.FormatInt(e.Len, 10))
	}
	return b.String()
}

// Parse reads what Format wrote ("" is no extent). At most max extents are
// accepted: the list comes from an image, which may be hostile.
func Parse(s string, max int) ([]Extent, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > max {
		return nil, fmt.Errorf("%d extents, at most %d", len(parts), max)
	}
	out := make([]Extent, 0, len(parts))
	for _, p := range parts {
		o, l, ok := strings.Cut(p, "+")
		off, err1 := strconv.ParseInt(o, 10, 64)
		n, err2 := strconv.ParseInt(l, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("extent %q", p)
		}
		out = append(out, Extent{Off: off, Len: n})
	}
	return out, nil
}

package image

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Decoded is one image file decoded on its own, without its inventory.
type Decoded struct {
	Kind    string          // kind name, e.g. "core" or "pages"
	Raw     bool            // raw pages: no magic, no entries
	Magic   Magic           // zero for raw files
	Size    int64           // file size in bytes
	Entries []proto.Message // nil for raw files
}

// DecodeFile decodes the image file at path for inspection (`ctr-cr show
// -f`). A file whose base name is pages-<name>.img is raw pages; any other
// file is decoded by its magic, whatever its name, with the same framing
// and entry-count rules as Open. Nothing is checked against an inventory,
// so use Open to validate an image. Errors are *Error values naming path.
func DecodeFile(path string) (*Decoded, error) {
	l := loc{file: path}
	f, fi, err := openRegular(path, true)
	if err != nil {
		return nil, l.err(err)
	}
	defer f.Close()
	size := fi.Size()
	if k, _, err := kindOf(filepath.Base(path)); err == nil && k.Raw {
		if size%PageSize != 0 {
			return nil, l.corrupt(-1, -1, "size %d is not a multiple of the page size %d", size, PageSize)
		}
		return &Decoded{Kind: k.Name, Raw: true, Size: size}, nil
	}
	br := bufio.NewReaderSize(io.LimitReader(f, size), 64<<10)
	m, err := readMagic(br, size, l)
	if err != nil {
		return nil, err
	}
	k := kindByMagic(m)
	if k == nil {
		return nil, l.corrupt(-1, 0, "unknown magic %s", m)
	}
	msgs, err := decodeBody(br, size, k, l, nil)
	if err != nil {
		return nil, err
	}
	return &Decoded{Kind: k.Name, Magic: m, Size: size, Entries: msgs}, nil
}

var jsonOpts = protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true}

// MarshalJSON renders d as the object `ctr-cr show` prints:
// {"magic": "CRCO", "kind": "core", "entries": [...]}, entries in protojson
// with proto field names, or {"kind": "pages", "size": N, "pages": N/4096}
// for raw pages.
func (d *Decoded) MarshalJSON() ([]byte, error) {
	if d.Raw {
		return json.Marshal(struct {
			Kind  string `json:"kind"`
			Size  int64  `json:"size"`
			Pages int64  `json:"pages"`
		}{d.Kind, d.Size, d.Size / PageSize})
	}
	ents := make([]json.RawMessage, len(d.Entries))
	for i, m := range d.Entries {
		b, err := jsonOpts.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		ents[i] = b
	}
	return json.Marshal(struct {
		Magic   string            `json:"magic"`
		Kind    string            `json:"kind"`
		Entries []json.RawMessage `json:"entries"`
	}{d.Magic.String(), d.Kind, ents})
}

// FileJSON decodes the image file at path (see DecodeFile) and writes it to
// w as indented JSON followed by a newline.
func FileJSON(path string, w io.Writer) error {
	d, err := DecodeFile(path)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return loc{file: path}.err(err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

package image

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strconv"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Decoded is one image file decoded on its own, without its inventory.
type Decoded struct {
	Kind    string          // kind name, e.g. "core" or "pages"
	Raw     bool            // raw pages: no magic, no entries
	Layer   bool            // a file of the layer above (Kind.Layer): opaque
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
	if k, _, err := kindOf(filepath.Base(path)); err == nil && k.Layer {
		return &Decoded{Kind: k.Name, Layer: true, Size: size}, nil
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

// MarshalJSON renders d as the object `ctr-cr show` prints:
// {"magic": "CRCO", "kind": "core", "entries": [...]}, entries as protojson
// would render them with proto field names (see entryJSON), or {"kind": "pages", "size": N, "pages": N/4096}
// for raw pages.
func (d *Decoded) MarshalJSON() ([]byte, error) {
	if d.Layer {
		return json.Marshal(struct {
			Kind string `json:"kind"`
			Size int64  `json:"size"`
		}{d.Kind, d.Size})
	}
	if d.Raw {
		return json.Marshal(struct {
			Kind  string `json:"kind"`
			Size  int64  `json:"size"`
			Pages int64  `json:"pages"`
		}{d.Kind, d.Size, d.Size / PageSize})
	}
	ents := make([]json.RawMessage, len(d.Entries))
	for i, m := range d.Entries {
		b, err := entryJSON(m.ProtoReflect())
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

// entryJSON renders m the way protojson does with proto field names: the
// populated fields in declaration order, 64-bit integers as strings, enums
// by name, bytes in base64, non-finite floats as "NaN"/"Infinity". It is
// here instead of protojson, whose package init (a regexp compiled and
// more) every ctr-cr command paid for at start-up, for `show` alone.
func entryJSON(m protoreflect.Message) ([]byte, error) {
	b := []byte{'{'}
	fields := m.Descriptor().Fields()
	first := true
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = strconv.AppendQuote(b, string(fd.Name()))
		b = append(b, ':')
		var err error
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			b = append(b, '[')
			for j := 0; j < l.Len(); j++ {
				if j > 0 {
					b = append(b, ',')
				}
				if b, err = appendJSONValue(b, fd, l.Get(j)); err != nil {
					return nil, err
				}
			}
			b = append(b, ']')
		case fd.IsMap():
			mp := v.Map()
			b = append(b, '{')
			n := 0
			mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if n > 0 {
					b = append(b, ',')
				}
				n++
				b, _ = appendJSONString(b, k.String())
				b = append(b, ':')
				b, err = appendJSONValue(b, fd.MapValue(), mv)
				return err == nil
			})
			if err != nil {
				return nil, err
			}
			b = append(b, '}')
		default:
			if b, err = appendJSONValue(b, fd, v); err != nil {
				return nil, err
			}
		}
	}
	return append(b, '}'), nil
}

func appendJSONValue(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, error) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return strconv.AppendBool(b, v.Bool()), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return strconv.AppendInt(b, v.Int(), 10), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return strconv.AppendUint(b, v.Uint(), 10), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return strconv.AppendQuote(b, strconv.FormatInt(v.Int(), 10)), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return strconv.AppendQuote(b, strconv.FormatUint(v.Uint(), 10)), nil
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f := v.Float()
		switch {
		case math.IsNaN(f):
			return append(b, `"NaN"`...), nil
		case math.IsInf(f, 1):
			return append(b, `"Infinity"`...), nil
		case math.IsInf(f, -1):
			return append(b, `"-Infinity"`...), nil
		}
		bits := 64
		if fd.Kind() == protoreflect.FloatKind {
			bits = 32
		}
		return strconv.AppendFloat(b, f, 'g', -1, bits), nil
	case protoreflect.StringKind:
		return appendJSONString(b, v.String())
	case protoreflect.BytesKind:
		return appendJSONString(b, base64.StdEncoding.EncodeToString(v.Bytes()))
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return appendJSONString(b, string(ev.Name()))
		}
		return strconv.AppendInt(b, int64(v.Enum()), 10), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		mb, err := entryJSON(v.Message())
		return append(b, mb...), err
	}
	return nil, fmt.Errorf("field %s: unsupported kind %v", fd.FullName(), fd.Kind())
}

func appendJSONString(b []byte, s string) ([]byte, error) {
	var q bytes.Buffer
	e := json.NewEncoder(&q)
	e.SetEscapeHTML(false) // as protojson
	err := e.Encode(s)
	return append(b, bytes.TrimSuffix(q.Bytes(), []byte("\n"))...), err
}

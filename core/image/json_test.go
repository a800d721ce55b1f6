package image

import (
	"bytes"
	"encoding/json"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// fill sets every field of m to a value that is not the default (lists get
// two elements, messages are filled to depth 3), with seed varying them.
func fill(m protoreflect.Message, seed int, depth int) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		val := func(k int) (protoreflect.Value, bool) {
			n := seed*31 + i*7 + k + 1
			switch fd.Kind() {
			case protoreflect.BoolKind:
				return protoreflect.ValueOfBool(true), true
			case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
				return protoreflect.ValueOfInt32(int32(-n)), true
			case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
				return protoreflect.ValueOfUint32(uint32(n) | 1<<31), true
			case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
				return protoreflect.ValueOfInt64(-int64(n) << 40), true
			case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
				return protoreflect.ValueOfUint64(uint64(n) | 1<<63), true
			case protoreflect.FloatKind:
				return protoreflect.ValueOfFloat32(float32(n) / 3), true
			case protoreflect.DoubleKind:
				return protoreflect.ValueOfFloat64(float64(n) / 3), true
			case protoreflect.StringKind:
				return protoreflect.ValueOfString("s\"\\<é>\n" + string(rune('a'+n%26))), true
			case protoreflect.BytesKind:
				return protoreflect.ValueOfBytes([]byte{byte(n), 0, 0xff, '"'}), true
			case protoreflect.EnumKind:
				vs := fd.Enum().Values()
				return protoreflect.ValueOfEnum(vs.Get(vs.Len() - 1).Number()), true
			case protoreflect.MessageKind:
				if depth == 0 {
					return protoreflect.Value{}, false
				}
				sub := m.NewField(fd)
				if fd.IsList() {
					sub = protoreflect.ValueOfMessage(m.Mutable(fd).List().NewElement().Message())
				}
				fill(sub.Message(), n, depth-1)
				return sub, true
			}
			return protoreflect.Value{}, false
		}
		if fd.IsList() {
			l := m.Mutable(fd).List()
			for k := 0; k < 2; k++ {
				if v, ok := val(k); ok {
					l.Append(v)
				}
			}
			continue
		}
		if v, ok := val(0); ok {
			m.Set(fd, v)
		}
	}
}

// TestEntryJSONMatchesProtojson: show's encoder renders every message of
// the image format as protojson does (same JSON value), full and empty.
func TestEntryJSONMatchesProtojson(t *testing.T) {
	imagepb.Init() // File_image_proto is set on first use (internal/protolazy)
	msgs := imagepb.File_image_proto.Messages()
	if msgs.Len() == 0 {
		t.Fatal("no messages")
	}
	opts := protojson.MarshalOptions{UseProtoNames: true}
	for i := 0; i < msgs.Len(); i++ {
		md := msgs.Get(i)
		for _, full := range []bool{false, true} {
			m := dynamicpb.NewMessage(md)
			if full {
				fill(m, i, 3)
			}
			got, err := entryJSON(m)
			if err != nil {
				t.Fatalf("%s: %v", md.FullName(), err)
			}
			want, err := opts.Marshal(m)
			if err != nil {
				t.Fatalf("%s: protojson: %v", md.FullName(), err)
			}
			// same text once compacted (protojson varies its
			// spacing on purpose), so also the same field order
			var g, w bytes.Buffer
			if err := json.Compact(&g, got); err != nil {
				t.Fatalf("%s: invalid JSON %s: %v", md.FullName(), got, err)
			}
			json.Compact(&w, want)
			if g.String() != w.String() {
				t.Errorf("%s:\n got %s\nwant %s", md.FullName(), g.String(), w.String())
			}
		}
	}
}

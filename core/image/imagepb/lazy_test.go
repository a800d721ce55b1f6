package imagepb

import (
	"os"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ctr-cr/ctr-cr/internal/protolazy"
)

// The committed generated file registers its descriptors lazily (make
// proto runs internal/protolazy after protoc).
func TestGeneratedFileRegistersLazily(t *testing.T) {
	src, err := os.ReadFile("image.pb.go")
	if err != nil {
		t.Fatal(err)
	}
	if err := protolazy.Check(src); err != nil {
		t.Fatalf("image.pb.go: %v (run make proto)", err)
	}
}

// Messages and enums work without anyone calling Init first: every entry
// registers the file on the way.
func TestFirstUseRegisters(t *testing.T) {
	b, err := proto.Marshal(&Vma{Start: 0x1000, End: 0x2000, Kind: VmaKind_VMA_HEAP})
	if err != nil {
		t.Fatal(err)
	}
	var v Vma
	if err := proto.Unmarshal(b, &v); err != nil || v.End != 0x2000 {
		t.Fatalf("round trip: %v %v", err, &v)
	}
	if s := VmaKind_VMA_HEAP.String(); s != "VMA_HEAP" {
		t.Errorf("enum String = %q", s)
	}
	if File_image_proto == nil || File_image_proto.Messages().Len() == 0 {
		t.Error("file descriptor not registered after first use")
	}
}

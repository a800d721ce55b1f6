package protolazy

import (
	"strings"
	"testing"
)

const generated = `package p

import (
	protoreflect "google.golang.org/protobuf/reflect/protoreflect"
	sync "sync"
)

type M struct{}

func (x *M) Reset() {
	_ = &file_p_proto_msgTypes[0]
}

func (x *M) ProtoReflect() protoreflect.Message {
	mi := &file_p_proto_msgTypes[0]
	_ = mi
	return nil
}

type E int32

func (x E) String() string {
	_ = file_p_proto_enumTypes[0]
	return ""
}

func (E) Descriptor() protoreflect.EnumDescriptor {
	return file_p_proto_enumTypes[0].Descriptor()
}

func (E) Type() protoreflect.EnumType {
	return &file_p_proto_enumTypes[0]
}

var file_p_proto_msgTypes = make([]int, 1)
var file_p_proto_enumTypes = make([]int, 1)
var once sync.Once

func init() { file_p_proto_init() }
func file_p_proto_init() {
	_ = file_p_proto_msgTypes
}
`

func TestRewrite(t *testing.T) {
	out, err := Rewrite([]byte(generated))
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if strings.Contains(s, "func init()") || !strings.Contains(s, "func Init() { file_p_proto_initOnce.Do(file_p_proto_init) }") {
		t.Fatalf("init not replaced:\n%s", s)
	}
	if n := strings.Count(s, "\tInit()\n"); n != 5 {
		t.Errorf("%d methods call Init, want 5:\n%s", n, s)
	}
	if _, err := Rewrite(out); err == nil {
		t.Error("a rewritten file was rewritten again")
	}
}

func TestRewriteRefuses(t *testing.T) {
	for name, src := range map[string]string{
		"no init": strings.Replace(generated, "func init() { file_p_proto_init() }", "", 1),
		// a shape the rewrite does not know: Check must catch it
		"unknown user of the tables": generated + "\nfunc (x *M) Other() { _ = file_p_proto_msgTypes }\n",
	} {
		if _, err := Rewrite([]byte(src)); err == nil {
			t.Errorf("%s: rewritten without error", name)
		}
	}
}

// Package protolazy rewrites a file made by protoc-gen-go so that its
// descriptors are registered with the protobuf runtime on first use
// instead of in a package init.
//
// Registration builds descriptors for every message and enum of the
// schema and fills the global registries; for ctr-cr's image schema that
// is ~3 ms per process on the test VM, mostly page faults, paid by every
// command at start-up, also by those that never touch an image (hook,
// check, --version). The rewrite:
//
//   - replaces `func init() { file_X_init() }` with an exported Init that
//     runs file_X_init once (sync.Once);
//   - makes Init the first statement of every method that reaches the
//     descriptors: ProtoReflect and Reset of each message (ProtoReflect is
//     the entry of proto.Marshal, Unmarshal, Clone, Equal, Size) and
//     String, Descriptor and Type of each enum;
//   - then checks, on the syntax tree, that every function using the
//     message or enum type tables starts with Init, and fails otherwise (a
//     newer protoc-gen-go with a different shape must not give a file that
//     panics on some path).
package protolazy

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"regexp"
	"strings"
)

var (
	initRE    = regexp.MustCompile(`(?m)^func init\(\) \{ (file_\w+_init)\(\) \}$`)
	methodRE  = regexp.MustCompile(`(?m)^(func \(x \*\w+\) ProtoReflect\(\) protoreflect\.Message \{|func \(x \*\w+\) Reset\(\) \{|func \(x \w+\) String\(\) string \{|func \(\w+\) Descriptor\(\) protoreflect\.EnumDescriptor \{|func \(\w+\) Type\(\) protoreflect\.EnumType \{)$`)
	tablesRE  = regexp.MustCompile(`\bfile_\w+_(msgTypes|enumTypes)\b`)
	initMarks = "// Init registers"
)

// Rewrite returns src (a protoc-gen-go file) with lazy registration.
func Rewrite(src []byte) ([]byte, error) {
	if bytes.Contains(src, []byte(initMarks)) {
		return nil, fmt.Errorf("already rewritten")
	}
	m := initRE.FindSubmatch(src)
	if m == nil {
		return nil, fmt.Errorf("no `func init() { file_*_init() }` to replace")
	}
	fileInit := string(m[1])
	lazy := fmt.Sprintf(`%s this file's descriptors with the protobuf runtime, once.
// It runs on first use of a message (ProtoReflect) or enum rather than at
// program start (rewritten by internal/protolazy: registration is paid
// only by processes that use the schema).
func Init() { %sOnce.Do(%s) }

var %sOnce sync.Once`, initMarks, fileInit, fileInit, fileInit)
	out := initRE.ReplaceAll(src, []byte(lazy))
	out = methodRE.ReplaceAll(out, []byte("$1\n\tInit()"))
	if !bytes.Contains(out, []byte(`sync "sync"`)) && !bytes.Contains(out, []byte(`"sync"`)) {
		return nil, fmt.Errorf("the file does not import sync")
	}
	out, err := format.Source(out)
	if err != nil {
		return nil, err
	}
	if err := Check(out); err != nil {
		return nil, err
	}
	return out, nil
}

// Check verifies that src registers lazily: no package init, an Init, and
// every function that uses the message or enum type tables (other than the
// registration itself) starts by calling Init.
func Check(src []byte) error {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "", src, 0)
	if err != nil {
		return err
	}
	hasInit := false
	var bad []string
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Body == nil {
			continue
		}
		name := fd.Name.Name
		if fd.Recv != nil {
			name = recvName(fd.Recv) + "." + name
		}
		switch {
		case fd.Recv == nil && name == "init":
			return fmt.Errorf("a package init is left")
		case fd.Recv == nil && name == "Init":
			hasInit = true
			continue
		case fd.Recv == nil && strings.HasPrefix(name, "file_") && strings.HasSuffix(name, "_init"):
			continue
		}
		body := src[fset.Position(fd.Body.Lbrace).Offset:fset.Position(fd.Body.Rbrace).Offset]
		if !tablesRE.Match(body) {
			continue
		}
		if len(fd.Body.List) == 0 || !callsInit(fd.Body.List[0]) {
			bad = append(bad, name)
		}
	}
	if !hasInit {
		return fmt.Errorf("no Init function")
	}
	if len(bad) > 0 {
		return fmt.Errorf("functions using the type tables without calling Init first: %s", strings.Join(bad, ", "))
	}
	return nil
}

func callsInit(s ast.Stmt) bool {
	es, ok := s.(*ast.ExprStmt)
	if !ok {
		return false
	}
	c, ok := es.X.(*ast.CallExpr)
	if !ok {
		return false
	}
	id, ok := c.Fun.(*ast.Ident)
	return ok && id.Name == "Init" && len(c.Args) == 0
}

func recvName(fl *ast.FieldList) string {
	if len(fl.List) == 0 {
		return "?"
	}
	t := fl.List[0].Type
	if st, ok := t.(*ast.StarExpr); ok {
		t = st.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name
	}
	return "?"
}

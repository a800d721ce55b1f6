package image

import (
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// FormatVersion is the image format version this package writes; it reads
// MinFormatVersion to FormatVersion. The inventory's magic, its framing and
// its format_version field are kept stable across versions so that any
// version can be recognised. Version 2 images may hold what a version-1
// reader would silently ignore (pages shared copy-on-write with a parent
// process, MmEntry.cow_parent_runs and pages-cowbase-*; pages left to a
// parent image, Inventory.parent_path and parentmap-*; namespaces the tree
// had of its own, Inventory.namespaces and namespaces.json): a ctr-cr that
// reads only version 1 refuses them instead. Version 3 lists the files of
// the layer above (Layer kinds: a container's spec.dump, ctr-cr.json, ...)
// in the inventory with their checksums, and an unlisted one is a stray;
// in versions 1 and 2 they were unlisted, and stay unchecked by Open.
const (
	FormatVersion    = 3
	MinFormatVersion = 1
)

// layerListedVersion is the first format version whose inventory lists
// the layer files (Layer kinds).
const layerListedVersion = 3

// PageSize is the size of one page in pages-*.img and pagemap-*.img.
const PageSize = 4096

// InventoryName is the name of the inventory file of every image.
const InventoryName = "inventory.img"

// Magic is the 4-byte tag that starts every image file except raw pages.
type Magic [4]byte

// String returns the magic as text when it is printable ASCII, else quoted
// with its hex bytes, e.g. `"\x00\x01AB" (00 01 41 42)`.
func (m Magic) String() string {
	printable := true
	var q strings.Builder
	q.WriteByte('"')
	for _, c := range m {
		switch {
		case c == '"' || c == '\\':
			printable = false
			q.WriteByte('\\')
			q.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			printable = false
			fmt.Fprintf(&q, "\\x%02x", c)
		default:
			q.WriteByte(c)
		}
	}
	if printable {
		return string(m[:])
	}
	q.WriteByte('"')
	return fmt.Sprintf("%s (% x)", q.String(), m[:])
}

// Kind describes one kind of image file: its name pattern, magic and the
// protobuf messages it holds. The package-wide table (kinds) is the only
// place that maps names to magics to message types.
type Kind struct {
	// Name is the short kind name shown by `ctr-cr show`, e.g. "core".
	Name string
	// Pattern is the file name pattern: a literal name ("pstree.img") or a
	// prefix, one placeholder (<pid>, <name> or <n>, an index from 0) and a
	// suffix (".img"; a Layer kind's may differ).
	Pattern string
	// Magic starts the file; zero for Raw kinds.
	Magic Magic
	// Raw kinds hold unframed data (pages) instead of entries.
	Raw bool
	// Head, when non-nil, returns a new message for the mandatory first
	// entry; every other entry is an Entry message.
	Head func() proto.Message
	// Entry returns a new message for an entry (nil for Raw kinds).
	Entry func() proto.Message
	// One means exactly one Entry message (after Head, if any).
	One bool
	// Layer kinds are files of the layer above the core (the container
	// layer's JSON documents and tmpfs archives): opaque bytes of any
	// size, no magic, no entries. The image lists them with their
	// checksums like any file (Writer.ListLayerFile), Open verifies them,
	// and their contents are the layer's to validate.
	Layer bool
}

// kinds is the kind table. Keep magics distinct and patterns unambiguous
// (TestKindTable checks both).
var kinds = []*Kind{
	{Name: "inventory", Pattern: InventoryName, Magic: Magic{'C', 'R', 'I', 'N'}, One: true,
		Entry: func() proto.Message { return new(imagepb.Inventory) }},
	{Name: "pstree", Pattern: "pstree.img", Magic: Magic{'C', 'R', 'P', 'T'},
		Entry: func() proto.Message { return new(imagepb.PstreeEntry) }},
	{Name: "core", Pattern: "core-<pid>.img", Magic: Magic{'C', 'R', 'C', 'O'}, One: true,
		Entry: func() proto.Message { return new(imagepb.TaskCore) }},
	{Name: "mm", Pattern: "mm-<pid>.img", Magic: Magic{'C', 'R', 'M', 'M'}, One: true,
		Entry: func() proto.Message { return new(imagepb.MmEntry) }},
	{Name: "pagemap", Pattern: "pagemap-<name>.img", Magic: Magic{'C', 'R', 'P', 'M'},
		Head:  func() proto.Message { return new(imagepb.PagemapHead) },
		Entry: func() proto.Message { return new(imagepb.PagemapEntry) }},
	{Name: "pages", Pattern: "pages-<name>.img", Raw: true},
	{Name: "files", Pattern: "files.img", Magic: Magic{'C', 'R', 'F', 'L'},
		Entry: func() proto.Message { return new(imagepb.FileEntry) }},
	{Name: "fdinfo", Pattern: "fdinfo-<pid>.img", Magic: Magic{'C', 'R', 'F', 'D'},
		Entry: func() proto.Message { return new(imagepb.FdEntry) }},
	// pages of a pre-copy chain's image that are in its parent (parent.go)
	{Name: "parentmap", Pattern: "parentmap-<pid>.img", Magic: Magic{'C', 'R', 'P', 'A'},
		Entry: func() proto.Message { return new(imagepb.PagemapEntry) }},
	// the container layer's files (package container)
	{Name: "spec-dump", Pattern: "spec.dump", Layer: true},
	{Name: "container-meta", Pattern: "ctr-cr.json", Layer: true},
	{Name: "container-state", Pattern: "container.json", Layer: true},
	{Name: "container-stdio", Pattern: "descriptors.json", Layer: true},
	{Name: "predump-meta", Pattern: "ctr-cr-predump.json", Layer: true},
	{Name: "tmpfs", Pattern: "tmpfs-<n>.tar", Layer: true},
}

// Names of kinds used by the typed API.
const (
	kindInventory = "inventory"
	kindPstree    = "pstree"
	kindCore      = "core"
	kindMm        = "mm"
	kindPagemap   = "pagemap"
	kindPages     = "pages"
	kindFiles     = "files"
	kindFdinfo    = "fdinfo"
	kindParentmap = "parentmap"
)

// newEntry returns a new message for entry idx of a file of kind k.
func (k *Kind) newEntry(idx int) proto.Message {
	if idx == 0 && k.Head != nil {
		return k.Head()
	}
	return k.Entry()
}

// split returns the parts of k.Pattern around its placeholder; ph is "" for
// a literal pattern.
func (k *Kind) split() (prefix, ph, suffix string) {
	i := strings.IndexByte(k.Pattern, '<')
	j := strings.IndexByte(k.Pattern, '>')
	if i < 0 || j < i {
		return k.Pattern, "", ""
	}
	return k.Pattern[:i], k.Pattern[i+1 : j], k.Pattern[j+1:]
}

// match reports whether name is a file of kind k and returns the value of
// the placeholder ("" for literal patterns).
func (k *Kind) match(name string) (arg string, ok bool) {
	prefix, ph, suffix := k.split()
	if ph == "" {
		return "", name == prefix
	}
	if len(name) <= len(prefix)+len(suffix) ||
		!strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) {
		return "", false
	}
	arg = name[len(prefix) : len(name)-len(suffix)]
	return arg, validArg(ph, arg) == nil
}

// FileName returns the name of the file of kind k for placeholder value arg
// (ignored for literal patterns), or an error if arg is not valid for it.
func (k *Kind) FileName(arg string) (string, error) {
	prefix, ph, suffix := k.split()
	if ph == "" {
		return prefix, nil
	}
	if err := validArg(ph, arg); err != nil {
		return "", fmt.Errorf("%s file name: %w", k.Name, err)
	}
	return prefix + arg + suffix, nil
}

// maxNameArg bounds <name> so file names stay well under NAME_MAX.
const maxNameArg = 200

func validArg(ph, arg string) error {
	switch ph {
	case "pid":
		n, err := strconv.ParseInt(arg, 10, 32)
		if err != nil || n <= 0 || strconv.FormatInt(n, 10) != arg {
			return fmt.Errorf("invalid pid %q", arg)
		}
		return nil
	case "n":
		n, err := strconv.ParseInt(arg, 10, 32)
		if err != nil || n < 0 || strconv.FormatInt(n, 10) != arg {
			return fmt.Errorf("invalid index %q", arg)
		}
		return nil
	case "name":
		if arg == "" || len(arg) > maxNameArg {
			return fmt.Errorf("invalid name %q: want 1 to %d characters", arg, maxNameArg)
		}
		for i := 0; i < len(arg); i++ {
			c := arg[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
				return fmt.Errorf("invalid name %q: only [A-Za-z0-9_-] allowed", arg)
			}
		}
		return nil
	}
	return fmt.Errorf("unknown placeholder <%s>", ph)
}

// KindOf returns the kind of the image file called name (a base name such
// as "core-42.img") and the value of its placeholder ("42"), or an error if
// name is not the name of any image file.
func KindOf(name string) (Kind, string, error) {
	k, arg, err := kindOf(name)
	if err != nil {
		return Kind{}, "", err
	}
	return *k, arg, nil
}

func kindOf(name string) (*Kind, string, error) {
	for _, k := range kinds {
		if arg, ok := k.match(name); ok {
			return k, arg, nil
		}
	}
	return nil, "", fmt.Errorf("%q is not the name of an image file", name)
}

func kindByName(name string) *Kind {
	for _, k := range kinds {
		if k.Name == name {
			return k
		}
	}
	panic("image: no kind " + name) // programming error in this package
}

func kindByMagic(m Magic) *Kind {
	for _, k := range kinds {
		if !k.Raw && !k.Layer && k.Magic == m {
			return k
		}
	}
	return nil
}

// fileName returns the file name of the kind called kindName for arg.
func fileName(kindName, arg string) (string, error) {
	return kindByName(kindName).FileName(arg)
}

// MagicOf returns the magic an image file called name starts with. It fails
// for names that are not image files and for raw pages-*.img, which have no
// magic.
func MagicOf(name string) (Magic, error) {
	k, _, err := kindOf(name)
	if err != nil {
		return Magic{}, err
	}
	if k.Raw || k.Layer {
		return Magic{}, fmt.Errorf("%s holds raw %s and has no magic", name, k.Name)
	}
	return k.Magic, nil
}

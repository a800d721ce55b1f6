package image

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrCorrupt is wrapped by errors about a malformed or inconsistent
	// image: bad magic, framing, message, entry count or reference.
	ErrCorrupt = errors.New("corrupt")
	// ErrChecksum is wrapped when a file's size or SHA-256 differs from
	// what inventory.img records.
	ErrChecksum = errors.New("checksum mismatch (file damaged or modified)")
	// ErrVersion is wrapped when inventory.img names a format version this
	// package cannot read.
	ErrVersion = errors.New("unsupported image format version")
)

// Error reports a problem with one image file, or with the image directory
// when File is empty. Its text reads like
//
//	image /ckpt: core-42.img: entry 1 at offset 37: corrupt: ...
type Error struct {
	Dir    string // image directory; "" when decoding a lone file
	File   string // base name in Dir, or the path given to DecodeFile
	Entry  int    // entry index (0 = first after the magic), -1 if none
	Offset int64  // byte offset in File, -1 if not known
	Err    error
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Dir != "" {
		b.WriteString("image ")
		b.WriteString(e.Dir)
		if e.File != "" {
			b.WriteString(": ")
			b.WriteString(e.File)
		}
	} else {
		b.WriteString("image file ")
		b.WriteString(e.File)
	}
	if e.Entry >= 0 {
		fmt.Fprintf(&b, ": entry %d", e.Entry)
		if e.Offset >= 0 {
			fmt.Fprintf(&b, " at offset %d", e.Offset)
		}
	} else if e.Offset >= 0 {
		fmt.Fprintf(&b, ": offset %d", e.Offset)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// loc names a file for error messages.
type loc struct {
	dir, file string
}

// err returns an *Error about the whole file.
func (l loc) err(err error) *Error {
	return &Error{Dir: l.dir, File: l.file, Entry: -1, Offset: -1, Err: err}
}

// at returns an *Error about entry idx (or -1) at offset off (or -1).
func (l loc) at(idx int, off int64, err error) *Error {
	return &Error{Dir: l.dir, File: l.file, Entry: idx, Offset: off, Err: err}
}

// corrupt is shorthand for l.at(idx, off, ErrCorrupt + message).
func (l loc) corrupt(idx int, off int64, format string, args ...any) *Error {
	return l.at(idx, off, fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...))
}

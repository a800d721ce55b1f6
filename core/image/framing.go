package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"
)

// MaxEntrySize is the largest framed entry, in bytes, that is written or
// read. A larger length prefix is corruption, not a reason to allocate.
const MaxEntrySize = 64 << 20

const (
	magicSize  = 4
	headerSize = 4 // the u32 length before each entry
)

var marshalOpts = proto.MarshalOptions{Deterministic: true}

func msgName(m proto.Message) string {
	return string(m.ProtoReflect().Descriptor().FullName())
}

// checkMessages checks that msgs are what a file of kind k holds: message
// types, the head entry and the entry count. The writer calls it so that it
// never writes a file the reader would reject.
func checkMessages(k *Kind, msgs []proto.Message) error {
	if k.Raw || k.Layer {
		return fmt.Errorf("%s files hold raw data, not entries", k.Name)
	}
	for i, m := range msgs {
		if m == nil || !m.ProtoReflect().IsValid() {
			return fmt.Errorf("entry %d is nil", i)
		}
		if got, want := msgName(m), msgName(k.newEntry(i)); got != want {
			return fmt.Errorf("entry %d is a %s, %s files want %s", i, got, k.Name, want)
		}
	}
	n := len(msgs)
	if k.Head != nil {
		if n == 0 {
			return fmt.Errorf("%s files start with a %s entry", k.Name, msgName(k.Head()))
		}
		n--
	}
	if k.One && n != 1 {
		return fmt.Errorf("%s files hold exactly one %s entry, got %d", k.Name, msgName(k.Entry()), n)
	}
	return nil
}

// encodeFile returns the contents of a file of kind k holding msgs: the
// magic, then each message framed by its u32 little-endian length.
func encodeFile(k *Kind, msgs []proto.Message) ([]byte, error) {
	if err := checkMessages(k, msgs); err != nil {
		return nil, err
	}
	buf := append([]byte(nil), k.Magic[:]...)
	for i, m := range msgs {
		buf = append(buf, 0, 0, 0, 0)
		start := len(buf)
		var err error
		buf, err = marshalOpts.MarshalAppend(buf, m)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		n := len(buf) - start
		if n > MaxEntrySize {
			return nil, fmt.Errorf("entry %d: %d bytes exceeds the %d-byte entry limit", i, n, MaxEntrySize)
		}
		binary.LittleEndian.PutUint32(buf[start-headerSize:], uint32(n))
	}
	return buf, nil
}

// readMagic reads the magic of a file of size bytes from r.
func readMagic(r io.Reader, size int64, l loc) (Magic, error) {
	var m Magic
	if size < magicSize {
		return m, l.corrupt(-1, 0, "%d bytes is too short for a %d-byte magic", size, magicSize)
	}
	if _, err := io.ReadFull(r, m[:]); err != nil {
		return m, l.at(-1, 0, readErr(err))
	}
	return m, nil
}

// readErr turns an early EOF into a truncation error.
func readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: file is shorter than expected (truncated?): %w", ErrCorrupt, io.ErrUnexpectedEOF)
	}
	return err
}

// decodeFile reads a whole file of kind k and size bytes from r: the magic,
// which must be k's, then the entries. check, if non-nil, is called on each
// entry as soon as it is decoded, and may stop decoding with an error.
func decodeFile(r io.Reader, size int64, k *Kind, l loc, check func(int, proto.Message) error) ([]proto.Message, error) {
	m, err := readMagic(r, size, l)
	if err != nil {
		return nil, err
	}
	if m != k.Magic {
		return nil, l.corrupt(-1, 0, "magic %s, want %s for a %s file", m, k.Magic, k.Name)
	}
	return decodeBody(r, size, k, l, check)
}

// decodeBody reads the entries of a file of kind k and size bytes from r,
// which is positioned just after the magic. It never allocates more than
// the bytes left in the file, nor more than MaxEntrySize, per entry.
func decodeBody(r io.Reader, size int64, k *Kind, l loc, check func(int, proto.Message) error) ([]proto.Message, error) {
	var (
		msgs []proto.Message
		hdr  [headerSize]byte
		buf  []byte
		off  = int64(magicSize)
	)
	for idx := 0; off < size; idx++ {
		if size-off < headerSize {
			return nil, l.corrupt(idx, off, "%d trailing bytes are too short for an entry length", size-off)
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, l.at(idx, off, readErr(err))
		}
		n := binary.LittleEndian.Uint32(hdr[:])
		left := size - off - headerSize
		if n > MaxEntrySize {
			return nil, l.corrupt(idx, off, "entry length %d exceeds the %d-byte entry limit", n, MaxEntrySize)
		}
		if int64(n) > left {
			return nil, l.corrupt(idx, off, "entry length %d exceeds the %d bytes left in the file (truncated?)", n, left)
		}
		if k.One && idx >= 1 && (k.Head == nil || idx >= 2) {
			return nil, l.corrupt(idx, off, "more than one entry: %s files hold exactly one %s", k.Name, msgName(k.Entry()))
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return nil, l.at(idx, off, readErr(err))
		}
		m := k.newEntry(idx)
		if err := proto.Unmarshal(buf[:n], m); err != nil {
			return nil, l.corrupt(idx, off, "bad %s entry: %v", msgName(m), err)
		}
		if check != nil {
			if err := check(idx, m); err != nil {
				if e, ok := err.(*Error); ok {
					return nil, e
				}
				return nil, l.at(idx, off, err)
			}
		}
		msgs = append(msgs, m)
		off += headerSize + int64(n)
	}
	n := len(msgs)
	if k.Head != nil {
		if n == 0 {
			return nil, l.corrupt(-1, off, "no entry: %s files start with a %s", k.Name, msgName(k.Head()))
		}
		n--
	}
	if k.One && n != 1 {
		return nil, l.corrupt(-1, off, "no entry: %s files hold exactly one %s", k.Name, msgName(k.Entry()))
	}
	return msgs, nil
}

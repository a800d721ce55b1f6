// Package pageserver carries the pages files of an image over TCP while the
// rest of the image is written (issue 16): `ctr-cr page-server` receives
// them into a directory on the destination, `dump|pre-dump --page-server`
// sends them from the source. Every chunk carries a CRC-32C, and every file
// ends with the receiver's checksum of all of it compared with the
// sender's: a damaged or missing byte is an error, never a silent hole. A
// connection that drops is an error on both sides: the receiver removes
// what it wrote and exits with an error, the dump fails.
//
// The stream is neither encrypted nor authenticated: bind the server to an
// address only the source can reach, or carry the port over SSH
// (ssh -L PORT:127.0.0.1:PORT dest) or a TLS tunnel (stunnel, socat
// OPENSSL) when the network between the hosts is not trusted.
//
// Protocol (all integers little-endian). A connection starts with the
// 4-byte magic "CRPS" and a u32 version (2), then one request:
//   - 'S' (session): the first connection, held for the whole dump; the
//     client ends it with 'E' (image complete: the server replies 0 and
//     exits) or 'A' (abort). If it drops, the session is aborted.
//   - 'F' (file): u16 name length, name (pages-<name>.img), then chunks
//     u32 length, u32 CRC-32C of the file from its start to the chunk's
//     end, data; a chunk of length 0 ends the file: its CRC is the whole
//     file's, and u64 total size follows. The server replies with a
//     status byte, then u64 size and u32 CRC-32C of the whole file as
//     written. (A running CRC rather than one per chunk: one pass over
//     the data on each side checks every chunk and the whole file.)
//
// Every reply starts with a status byte: 0 for success, 1 followed by a
// u16 length and a message.
package pageserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

const (
	magic   = "CRPS"
	version = 2 // 2: the chunks' CRC runs over the whole file

	opSession = 'S'
	opFile    = 'F'
	opEnd     = 'E'
	opAbort   = 'A'
	opRestore = 'R' // end of a migration's last round: restore it

	maxChunk = 8 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrProtocol is wrapped by errors about what came over the connection.
var ErrProtocol = errors.New("page server protocol")

func writeHello(w io.Writer, op byte) error {
	b := make([]byte, 9)
	copy(b, magic)
	binary.LittleEndian.PutUint32(b[4:], version)
	b[8] = op
	_, err := w.Write(b)
	return err
}

func readHello(r io.Reader) (byte, error) {
	b := make([]byte, 9)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, err
	}
	if string(b[:4]) != magic {
		return 0, fmt.Errorf("%w: not a ctr-cr page stream (magic %q)", ErrProtocol, b[:4])
	}
	if v := binary.LittleEndian.Uint32(b[4:]); v != version {
		return 0, fmt.Errorf("%w: version %d, this ctr-cr speaks %d", ErrProtocol, v, version)
	}
	return b[8], nil
}

func writeStatus(w io.Writer, err error) error {
	if err == nil {
		_, werr := w.Write([]byte{0})
		return werr
	}
	msg := err.Error()
	if len(msg) > 4000 {
		msg = msg[:4000]
	}
	b := make([]byte, 3+len(msg))
	b[0] = 1
	binary.LittleEndian.PutUint16(b[1:], uint16(len(msg)))
	copy(b[3:], msg)
	_, werr := w.Write(b)
	return werr
}

func readStatus(r io.Reader) error {
	var b [3]byte
	if _, err := io.ReadFull(r, b[:1]); err != nil {
		return err
	}
	if b[0] == 0 {
		return nil
	}
	if _, err := io.ReadFull(r, b[1:3]); err != nil {
		return err
	}
	msg := make([]byte, binary.LittleEndian.Uint16(b[1:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return err
	}
	return fmt.Errorf("page server: %s", msg)
}

func writeString(w io.Writer, msg string) error {
	if len(msg) > 4000 {
		msg = msg[:4000]
	}
	b := binary.LittleEndian.AppendUint16(nil, uint16(len(msg)))
	_, err := w.Write(append(b, msg...))
	return err
}

func readString(r io.Reader) (string, error) {
	var b [2]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", err
	}
	msg := make([]byte, binary.LittleEndian.Uint16(b[:]))
	_, err := io.ReadFull(r, msg)
	return string(msg), err
}

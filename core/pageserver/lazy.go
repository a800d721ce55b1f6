package pageserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Lazy restore from the source (restore --lazy-pages --page-server): the
// image's pages files stay where they were dumped, and
// `ctr-cr page-server --lazy-pages -D DIR` there serves reads of them.
//
// A connection starts with the hello and op 'L', answered by a status;
// then requests follow, each answered in order:
//   - 'G': u16 name length, name (pages-<name>.img), u64 offset, u32
//     length (at most 8 MiB). Reply: status, then u32 CRC-32C of the
//     data and the data (exactly length bytes: a read beyond the end of
//     the file is an error status).
//   - 'E': the restore is complete, every page is in: status, and the
//     server exits with success. 'A': the restore failed: status, and the
//     server exits with an error.
//
// A connection that drops is an error for the restore (its tree is
// killed: the pages cannot come); the server goes on serving the others.
const (
	opLazy    = 'L'
	opGet     = 'G'
	opLazyEnd = 'E'
	opLazyAbt = 'A'
)

// ServePages serves the pages files of dir to a lazy restore over
// connections accepted on l, until the restore says it is complete (nil)
// or failed (an error). It closes l.
func ServePages(l net.Listener, dir string) error {
	defer l.Close()
	s := &pageServer{dir: dir, files: map[string]*os.File{}, done: make(chan error, 1)}
	defer s.closeFiles()
	conns := acceptAll(l)
	for {
		select {
		case c, ok := <-conns.ch:
			if !ok {
				return errors.New("the listener closed")
			}
			go s.handle(c)
		case err := <-s.done:
			return err
		}
	}
}

type pageServer struct {
	dir   string
	mu    sync.Mutex
	files map[string]*os.File
	done  chan error
}

func (s *pageServer) finish(err error) {
	select {
	case s.done <- err:
	default:
	}
}

func (s *pageServer) closeFiles() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.files {
		f.Close()
	}
}

// file opens (once) the pages file name of dir.
func (s *pageServer) file(name string) (*os.File, error) {
	if !strings.HasPrefix(name, "pages-") || !strings.HasSuffix(name, ".img") || strings.ContainsAny(name, "/\x00") || name != filepath.Base(name) {
		return nil, fmt.Errorf("%w: %q is not a pages file name", ErrProtocol, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.files[name]; f != nil {
		return f, nil
	}
	f, err := os.Open(filepath.Join(s.dir, name))
	if err != nil {
		return nil, err
	}
	s.files[name] = f
	return f, nil
}

func (s *pageServer) handle(c net.Conn) {
	defer c.Close()
	op, err := readHello(c)
	if err != nil || op != opLazy {
		if err == nil {
			err = fmt.Errorf("%w: request %q to a lazy page server", ErrProtocol, op)
		}
		writeStatus(c, err)
		return
	}
	if writeStatus(c, nil) != nil {
		return
	}
	var b [1]byte
	for {
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return // the restore closed this reader
		}
		switch b[0] {
		case opGet:
			if err := s.get(c); err != nil {
				writeStatus(c, err)
				return
			}
		case opLazyEnd:
			writeStatus(c, nil)
			s.finish(nil)
			return
		case opLazyAbt:
			writeStatus(c, nil)
			s.finish(errors.New("the lazy restore failed"))
			return
		default:
			writeStatus(c, fmt.Errorf("%w: request %q", ErrProtocol, b[0]))
			return
		}
	}
}

// get answers one 'G' request.
func (s *pageServer) get(c net.Conn) error {
	name, err := readString(c)
	if err != nil {
		return err
	}
	var hdr [12]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return err
	}
	off, n := int64(binary.LittleEndian.Uint64(hdr[:])), binary.LittleEndian.Uint32(hdr[8:])
	if n > maxChunk || off < 0 {
		return fmt.Errorf("%w: read of %d bytes at %d", ErrProtocol, n, off)
	}
	f, err := s.file(name)
	if err != nil {
		return err
	}
	buf := make([]byte, 5+4+int(n))
	if got, err := f.ReadAt(buf[9:], off); got != int(n) {
		return fmt.Errorf("%s: read %d bytes at %d: %d read (%v)", name, n, off, got, err)
	}
	binary.LittleEndian.PutUint32(buf[5:], crc32.Checksum(buf[9:], castagnoli))
	_, err = c.Write(buf[4:]) // status 0 then CRC and data
	return err
}

// PageSource reads pages files from a lazy page server.
type PageSource struct {
	addr string
}

// NewPageSource returns the page source at addr (HOST:PORT); nothing is
// connected before a file is opened.
func NewPageSource(addr string) (*PageSource, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoServer, err)
	}
	return &PageSource{addr: addr}, nil
}

// Open opens pages file name on the server: a connection of its own.
func (ps *PageSource) Open(name string) (*RemoteFile, error) {
	c, err := ps.dial()
	if err != nil {
		return nil, err
	}
	return &RemoteFile{name: name, addr: ps.addr, c: c}, nil
}

func (ps *PageSource) dial() (net.Conn, error) {
	c, err := net.DialTimeout("tcp", ps.addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("page server %s: %w", ps.addr, err)
	}
	if err := writeHello(c, opLazy); err == nil {
		err = readStatus(c)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("page server %s: %w", ps.addr, err)
	}
	return c, nil
}

// Finish tells the server the restore is complete (ok) or failed: it
// exits.
func (ps *PageSource) Finish(ok bool) error {
	c, err := ps.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	op := byte(opLazyEnd)
	if !ok {
		op = opLazyAbt
	}
	if _, err := c.Write([]byte{op}); err != nil {
		return fmt.Errorf("page server %s: %w", ps.addr, err)
	}
	if err := readStatus(c); err != nil {
		return fmt.Errorf("page server %s: %w", ps.addr, err)
	}
	return nil
}

// RemoteFile is a pages file read from a lazy page server; safe for
// concurrent use (requests go one at a time).
type RemoteFile struct {
	name, addr string
	mu         sync.Mutex
	c          net.Conn
	err        error
}

// ReadAt reads len(b) bytes at off, in requests of at most 8 MiB, each
// checked by its CRC-32C. Any failure is final: the connection is gone.
func (f *RemoteFile) ReadAt(b []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	done := 0
	for done < len(b) {
		if f.err != nil {
			return done, f.err
		}
		n := min(len(b)-done, maxChunk)
		if err := f.get(b[done:done+n], off+int64(done)); err != nil {
			f.err = fmt.Errorf("page server %s: %s at %d: %w", f.addr, f.name, off+int64(done), err)
			f.c.Close()
			return done, f.err
		}
		done += n
	}
	return done, nil
}

func (f *RemoteFile) get(b []byte, off int64) error {
	req := []byte{opGet}
	req = binary.LittleEndian.AppendUint16(req, uint16(len(f.name)))
	req = append(req, f.name...)
	req = binary.LittleEndian.AppendUint64(req, uint64(off))
	req = binary.LittleEndian.AppendUint32(req, uint32(len(b)))
	f.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := f.c.Write(req); err != nil {
		return err
	}
	if err := readStatus(f.c); err != nil {
		return err
	}
	var crc [4]byte
	if _, err := io.ReadFull(f.c, crc[:]); err != nil {
		return err
	}
	if _, err := io.ReadFull(f.c, b); err != nil {
		return err
	}
	if got := crc32.Checksum(b, castagnoli); got != binary.LittleEndian.Uint32(crc[:]) {
		return fmt.Errorf("%w: damaged chunk (CRC-32C %#x, sent %#x)", ErrProtocol, got, binary.LittleEndian.Uint32(crc[:]))
	}
	return nil
}

// Close closes the connection.
func (f *RemoteFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.c.Close()
}

package pageserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Client sends the pages files of one dump to a page server.
type Client struct {
	addr    string
	session net.Conn
	wg      sync.WaitGroup
	mu      sync.Mutex
	err     error // first failure of a file stream
}

// Dial opens the session with the page server at addr (HOST:PORT).
func Dial(addr string) (*Client, error) {
	dbg("client dial")
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("page server %s: %w", addr, err)
	}
	if err := writeHello(c, opSession); err == nil {
		err = readStatus(c)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("page server %s: %w", addr, err)
	}
	return &Client{addr: addr, session: c}, nil
}

// Create returns the stream the image writer writes pages file name into:
// each Write goes out at once, as checksummed chunks on a connection of
// its own (no pipe, no copy of ours). Close ends the file; the outcome
// (the server's checksum of the file, compared with ours) is known at
// Wait or Finish.
func (cl *Client) Create(name string) (io.WriteCloser, error) {
	c, err := net.DialTimeout("tcp", cl.addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("page server %s: %w", cl.addr, err)
	}
	hdr := make([]byte, 2+len(name))
	binary.LittleEndian.PutUint16(hdr, uint16(len(name)))
	copy(hdr[2:], name)
	err = writeHello(c, opFile)
	if err == nil {
		_, err = c.Write(hdr)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("page server %s: %w", cl.addr, err)
	}
	cl.wg.Add(1)
	return &stream{cl: cl, name: name, c: c}, nil
}

// stream is one pages file on its way to the page server (Client.Create).
// Its Close may come from another goroutine while a Write blocks (the
// image writer's Abort): the connection is then cut, the Write fails and
// the server drops the session.
type stream struct {
	cl   *Client
	name string
	c    net.Conn
	hdr  [8]byte
	size int64  // bytes sent
	sum  uint32 // CRC-32C of the bytes sent
	err  error  // the first failure; sticky

	mu      sync.Mutex
	writing bool // a Write is under way
	closed  bool
}

// Write sends b as chunks of at most maxChunk bytes, each with the
// CRC-32C of the file up to its end (one pass over the data makes both
// the chunks' checks and the file's), header and data in one writev.
func (s *stream) Write(b []byte) (int, error) {
	if s.size == 0 {
		dbg("client %s first write %d", s.name, len(b))
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, fmt.Errorf("page server %s: %s: write after close", s.cl.addr, s.name)
	}
	s.writing = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.writing = false
		s.mu.Unlock()
	}()
	if s.err != nil {
		return 0, s.err
	}
	for done := 0; done < len(b); {
		chunk := b[done:min(len(b), done+maxChunk)]
		s.sum = crc32.Update(s.sum, castagnoli, chunk)
		binary.LittleEndian.PutUint32(s.hdr[:], uint32(len(chunk)))
		binary.LittleEndian.PutUint32(s.hdr[4:], s.sum)
		bufs := net.Buffers{s.hdr[:], chunk}
		if _, err := bufs.WriteTo(s.c); err != nil {
			s.err = fmt.Errorf("page server %s: %s: %w", s.cl.addr, s.name, err)
			s.cl.fail(s.err)
			return done, s.err
		}
		done += len(chunk)
		s.size += int64(len(chunk))
	}
	return len(b), nil
}

// CRC32C is the CRC-32C of all that was written: the pages file's
// checksum, so the image writer need not compute it again.
func (s *stream) CRC32C() uint32 { return s.sum }

// Close ends the file: the end chunk goes out and the server's reply is
// awaited in the background (Client.Wait). Closed while a Write is under
// way, it cuts the connection instead: the file never completes.
func (s *stream) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	busy := s.writing
	s.mu.Unlock()
	if busy || s.err != nil {
		s.c.Close()
		err := fmt.Errorf("page server %s: %s: closed while being written", s.cl.addr, s.name)
		if !busy {
			err = s.err // (Write ended before Close took the lock)
		}
		s.cl.fail(err)
		s.cl.wg.Done()
		return err
	}
	end := make([]byte, 16)
	binary.LittleEndian.PutUint32(end[4:], s.sum)
	binary.LittleEndian.PutUint64(end[8:], uint64(s.size))
	if _, err := s.c.Write(end); err != nil {
		s.c.Close()
		err = fmt.Errorf("page server %s: %s: %w", s.cl.addr, s.name, err)
		s.cl.fail(err)
		s.cl.wg.Done()
		return err
	}
	dbg("client %s closed, %d bytes", s.name, s.size)
	go func() {
		defer dbg("client %s confirmed", s.name)
		defer s.cl.wg.Done()
		defer s.c.Close()
		if err := confirm(s.c, s.size, s.sum); err != nil {
			s.cl.fail(fmt.Errorf("page server %s: %s: %w", s.cl.addr, s.name, err))
		}
	}()
	return nil
}

func (cl *Client) fail(err error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.err == nil {
		cl.err = err
	}
}

// confirm reads the server's reply to a file's end and checks its size and
// checksum of the file as written against what was sent.
func confirm(c net.Conn, size int64, sum uint32) error {
	if err := readStatus(c); err != nil {
		return err
	}
	var rb [12]byte
	if _, err := io.ReadFull(c, rb[:]); err != nil {
		return err
	}
	if got, gsum := int64(binary.LittleEndian.Uint64(rb[:])), binary.LittleEndian.Uint32(rb[8:]); got != size || gsum != sum {
		return fmt.Errorf("the server wrote %d bytes (CRC-32C %#x), %d were sent (%#x)", got, gsum, size, sum)
	}
	return nil
}

// Wait waits for every file created so far to be confirmed by the server
// and returns the first failure.
func (cl *Client) Wait() error {
	cl.wg.Wait()
	return cl.Err()
}

// Err returns the first failure of a file stream so far.
func (cl *Client) Err() error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.err
}

// Finish waits for every file to be confirmed and ends the session: the
// server has the complete pages then. Any failure is returned.
func (cl *Client) Finish() error {
	dbg("client finish")
	defer dbg("client finish done")
	if err := cl.Wait(); err != nil {
		cl.Abort()
		return err
	}
	defer cl.session.Close()
	if _, err := cl.session.Write([]byte{opEnd}); err != nil {
		return fmt.Errorf("page server %s: %w", cl.addr, err)
	}
	if err := readStatus(cl.session); err != nil {
		return fmt.Errorf("page server %s: %w", cl.addr, err)
	}
	return nil
}

// Abort ends the session as failed: the server removes the pages.
func (cl *Client) Abort() {
	cl.session.Write([]byte{opAbort})
	cl.session.Close()
}

// ErrNoServer is returned for a malformed --page-server argument.
var ErrNoServer = errors.New("--page-server wants HOST:PORT")

// SendFile sends the file at path as image file name (a migration sends
// every file of its images this way).
func (cl *Client) SendFile(name, path string) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := cl.Create(name)
	if err != nil {
		return err
	}
	// (large chunks: the file's own WriteTo would copy 32 KiB at a time)
	_, err = io.CopyBuffer(dst, struct{ io.Reader }{src}, make([]byte, 1<<20))
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
}

// FinishRestore is Finish for a migration's last round: the receiver
// restores the round's image and reports back; info is what it says of the
// restored tree. An error means nothing runs on the receiver.
func (cl *Client) FinishRestore() (info string, err error) {
	if err := cl.Wait(); err != nil {
		cl.Abort()
		return "", err
	}
	defer cl.session.Close()
	if _, err := cl.session.Write([]byte{opRestore}); err != nil {
		return "", fmt.Errorf("migration receiver %s: %w", cl.addr, err)
	}
	if err := readStatus(cl.session); err != nil {
		return "", fmt.Errorf("migration receiver %s: restore: %w", cl.addr, err)
	}
	return readString(cl.session)
}

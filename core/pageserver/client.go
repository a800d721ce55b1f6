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

// Create returns the file the image writer writes pages file name into:
// the write end of a pipe whose contents a goroutine sends on a connection
// of its own. The outcome (the server's checksum of the file, compared with
// ours) is known at Finish.
func (cl *Client) Create(name string) (*os.File, error) {
	c, err := net.DialTimeout("tcp", cl.addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("page server %s: %w", cl.addr, err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		c.Close()
		return nil, err
	}
	hdr := make([]byte, 2+len(name))
	binary.LittleEndian.PutUint16(hdr, uint16(len(name)))
	copy(hdr[2:], name)
	if err := writeHello(c, opFile); err != nil {
		c.Close()
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("page server %s: %w", cl.addr, err)
	}
	if _, err := c.Write(hdr); err != nil {
		c.Close()
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("page server %s: %w", cl.addr, err)
	}
	cl.wg.Add(1)
	go func() {
		defer cl.wg.Done()
		defer c.Close()
		defer pr.Close()
		if err := send(c, pr); err != nil {
			cl.fail(fmt.Errorf("page server %s: %s: %w", cl.addr, name, err))
		}
	}()
	return pw, nil
}

func (cl *Client) fail(err error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.err == nil {
		cl.err = err
	}
}

// send streams r (until EOF) as checksummed chunks, then checks the
// server's size and checksum of the whole file against what was sent.
func send(c net.Conn, r io.Reader) error {
	buf := make([]byte, 1<<20)
	var size int64
	var sum uint32
	hdr := make([]byte, 8)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			b := buf[:n]
			binary.LittleEndian.PutUint32(hdr, uint32(n))
			binary.LittleEndian.PutUint32(hdr[4:], crc32.Checksum(b, castagnoli))
			if _, werr := c.Write(hdr); werr != nil {
				return werr
			}
			if _, werr := c.Write(b); werr != nil {
				return werr
			}
			sum = crc32.Update(sum, castagnoli, b)
			size += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	end := make([]byte, 16)
	binary.LittleEndian.PutUint64(end[8:], uint64(size))
	if _, err := c.Write(end); err != nil {
		return err
	}
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
	_, err = io.Copy(dst, src)
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

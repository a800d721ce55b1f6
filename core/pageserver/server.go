package pageserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/ctr-cr/ctr-cr/core/image"
)

// Serve receives one dump's pages files into dir over connections accepted
// on l, until the session ends: nil once the client says the image is
// complete; an error (and every file it wrote removed) when the client
// aborts, the session connection drops or a file arrives damaged. It
// closes l.
func Serve(l net.Listener, dir string) error {
	defer l.Close()
	_, err := serveSession(acceptAll(l), dir, nil, nil)
	return err
}

// ServeMigration receives the images of a migration (`ctr-cr migrate`)
// into dir/round1, dir/round2, ... one session each, every file of the
// images (not only pages), until a session ends with a restore request:
// restore(dir of that round) then runs and its outcome goes back to the
// source, which kills its tree only once the restore succeeded. It closes
// l.
func ServeMigration(l net.Listener, dir string, restore func(dir string) (string, error)) error {
	return ServeMigrationAccepting(l, dir, restore, nil)
}

// ServeMigrationAccepting is ServeMigration that also takes the files
// whose (plain) names accept approves besides the image's own: the
// files a layer above the process image writes into it (a container's
// checkpoint: container.LayerFile). nil accepts none.
func ServeMigrationAccepting(l net.Listener, dir string, restore func(dir string) (string, error), accept func(name string) bool) error {
	defer l.Close()
	conns := acceptAll(l)
	for k := 1; ; k++ {
		restored, err := serveSession(conns, filepath.Join(dir, RoundName(k)), restore, accept)
		if err != nil || restored {
			return err
		}
	}
}

// RoundName is the directory of round k of a migration, on both sides.
func RoundName(k int) string { return fmt.Sprintf("round%d", k) }

// connQueue is the connections accepted on a listener, for one session
// after the other: held are those that came after a session had begun to
// end (the next round's), handed to the next session first.
type connQueue struct {
	ch   chan net.Conn
	held []net.Conn
}

// acceptAll queues the connections accepted on l; its channel is closed
// when l is.
func acceptAll(l net.Listener) *connQueue {
	q := &connQueue{ch: make(chan net.Conn)}
	go func() {
		defer close(q.ch)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			q.ch <- c
		}
	}()
	return q
}

// serveSession serves one session into dir from q: see Serve. With
// restore non-nil, a session may end with a restore request (restored).
// A connection accepted once the session is ending (the source was told
// the round is complete and may begin the next) is left in q for the next
// session: it must not land in this round's directory.
func serveSession(q *connQueue, dir string, restore func(string) (string, error), accept func(string) bool) (restored bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	s := &server{dir: dir, done: make(chan error, 1), restore: restore, accept: accept}
	for _, c := range q.held {
		go s.handle(c)
	}
	q.held = nil
loop:
	for {
		select {
		case c, ok := <-q.ch:
			if !ok {
				err = errors.New("the listener closed")
				break loop
			}
			s.mu.Lock()
			ending := s.ending
			s.mu.Unlock()
			if ending {
				q.held = append(q.held, c)
				continue
			}
			go s.handle(c)
		case err = <-s.done:
			break loop
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	if err != nil {
		for _, p := range s.written {
			os.Remove(p)
		}
	}
	return s.restored, err
}

type server struct {
	dir     string
	done    chan error
	mu      sync.Mutex
	written []string
	names   map[string]bool
	session bool
	ended   bool
	// ending is set before the source is told the session is complete:
	// from then on new connections are the next session's
	ending bool
	// restore runs the restore of a migration's last round
	restore  func(dir string) (string, error)
	restored bool
	// accept approves more file names of a migration (ServeMigrationAccepting)
	accept func(name string) bool
}

func (s *server) finish(err error) {
	select {
	case s.done <- err:
	default:
	}
}

func (s *server) handle(c net.Conn) {
	defer c.Close()
	op, err := readHello(c)
	if err != nil {
		s.finish(fmt.Errorf("connection from %s: %w", c.RemoteAddr(), err))
		return
	}
	switch op {
	case opSession:
		s.mu.Lock()
		dup := s.session
		s.session = true
		s.mu.Unlock()
		if dup {
			writeStatus(c, errors.New("a dump is already being received"))
			return
		}
		writeStatus(c, nil)
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			s.finish(fmt.Errorf("the dump's connection dropped before the image was complete: %w", err))
			return
		}
		switch b[0] {
		case opEnd:
			s.mu.Lock()
			s.ending = true
			s.mu.Unlock()
			writeStatus(c, nil)
			s.finish(nil)
		case opRestore:
			if s.restore == nil {
				writeStatus(c, errors.New("not a migration receiver: no restore here"))
				s.finish(fmt.Errorf("%w: a restore request", ErrProtocol))
				return
			}
			info, err := s.restore(s.dir)
			writeStatus(c, err)
			if err == nil {
				writeString(c, info)
				s.mu.Lock()
				s.restored = true
				s.mu.Unlock()
			}
			s.finish(err)
		case opAbort:
			s.finish(errors.New("the dump failed: pages removed"))
		default:
			s.finish(fmt.Errorf("%w: request %q", ErrProtocol, b[0]))
		}
	case opFile:
		size, sum, err := s.receive(c)
		if err != nil {
			writeStatus(c, err)
			s.finish(err)
			return
		}
		var b [13]byte
		binary.LittleEndian.PutUint64(b[1:], uint64(size))
		binary.LittleEndian.PutUint32(b[9:], sum)
		c.Write(b[:])
	default:
		s.finish(fmt.Errorf("%w: request %q", ErrProtocol, op))
	}
}

// receive writes one pages file from c; it returns its size and CRC-32C.
func (s *server) receive(c net.Conn) (int64, uint32, error) {
	var hb [2]byte
	if _, err := io.ReadFull(c, hb[:]); err != nil {
		return 0, 0, fmt.Errorf("file header: %w", err)
	}
	nb := make([]byte, binary.LittleEndian.Uint16(hb[:]))
	if _, err := io.ReadFull(c, nb); err != nil {
		return 0, 0, fmt.Errorf("file name: %w", err)
	}
	name := string(nb)
	k, _, err := image.KindOf(name)
	if err == nil && k.Layer {
		err = errors.New("a layer file") // taken only as below, as before
	}
	if s.restore != nil && s.accept != nil && err != nil && filepath.Base(name) == name && s.accept(name) {
		k, err = image.Kind{Name: "layer"}, nil // a file of the layer above
	}
	if err != nil || filepath.Base(name) != name || k.Name != "pages" && s.restore == nil {
		return 0, 0, fmt.Errorf("%w: %q is not the name of a pages file", ErrProtocol, name)
	}
	s.mu.Lock()
	if s.ended || s.names[name] {
		s.mu.Unlock()
		return 0, 0, fmt.Errorf("%s received twice", name)
	}
	if s.names == nil {
		s.names = map[string]bool{}
	}
	s.names[name] = true
	path := filepath.Join(s.dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		s.written = append(s.written, path)
	}
	s.mu.Unlock()
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	size, sum, err := receiveChunks(c, f, name)
	if err != nil {
		return 0, 0, err
	}
	dbg("server %s: last chunk, %d bytes", name, size)
	defer dbg("server %s synced", name)
	if err := f.Sync(); err != nil {
		return 0, 0, err
	}
	return size, sum, f.Close()
}

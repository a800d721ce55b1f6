package pageserver

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/writeback"
)

// receiveChunks writes the chunks of file name from c into f until the
// end chunk, checking each; it returns the file's size and CRC-32C.
// (Writing each chunk on a goroutine of its own while the next was
// received gained nothing on loopback here, two cores being shared with
// the sender: the chunks are received and written in turn.)
func receiveChunks(c net.Conn, f *os.File, name string) (size int64, sum uint32, err error) {
	wb := startWriteback(f)
	defer wb.stop()
	var buf []byte
	for {
		var ch [8]byte
		if _, err := io.ReadFull(c, ch[:]); err != nil {
			return 0, 0, fmt.Errorf("%s: connection dropped after %d bytes: %w", name, size, err)
		}
		n := binary.LittleEndian.Uint32(ch[:])
		want := binary.LittleEndian.Uint32(ch[4:])
		if n == 0 {
			var tb [8]byte
			if _, err := io.ReadFull(c, tb[:]); err != nil {
				return 0, 0, fmt.Errorf("%s: end: %w", name, err)
			}
			if total := int64(binary.LittleEndian.Uint64(tb[:])); total != size || want != sum {
				return 0, 0, fmt.Errorf("%s: %d bytes received (CRC-32C %#x), the sender sent %d (%#x)", name, size, sum, total, want)
			}
			return size, sum, nil
		}
		if n > maxChunk {
			return 0, 0, fmt.Errorf("%w: %s: chunk of %d bytes", ErrProtocol, name, n)
		}
		if size == 0 {
			dbg("server %s: first chunk", name)
		}
		if len(buf) < int(n) {
			buf = make([]byte, n) // as large as the sender's chunks
		}
		b := buf[:n]
		if _, err := io.ReadFull(c, b); err != nil {
			return 0, 0, fmt.Errorf("%s: connection dropped after %d bytes: %w", name, size, err)
		}
		// the chunk's CRC is of the file up to its end: one pass checks
		// the chunk and makes the file's checksum
		if sum = crc32.Update(sum, castagnoli, b); sum != want {
			return 0, 0, fmt.Errorf("%s: chunk at %d arrived damaged (CRC-32C mismatch)", name, size)
		}
		if _, err := writeback.Write(f, b); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", name, err)
		}
		size += int64(n)
		wb.grew(size)
	}
}

// writebackStep is how much of a received file is written before its
// disk writes are started (writeback).
const writebackStep = 32 << 20

// growingWriteback starts the disk writes of a received file as it grows
// (sync_file_range(SYNC_FILE_RANGE_WRITE), best effort), on a goroutine
// of its own since that may wait for the disk's queue: the fsync at the
// file's end then waits for its last part only, not for all of it (1.2 GB
// left to the flusher took 0.6 s to fsync here, most of a 1 GiB
// pre-dump's wait). It never makes anything durable itself; the fsync
// does.
type growingWriteback struct {
	kick    chan int64 // the file's size, when it has grown by a step
	done    chan struct{}
	started int64 // the size last handed over
}

func startWriteback(f *os.File) *growingWriteback {
	w := &growingWriteback{kick: make(chan int64, 1), done: make(chan struct{})}
	fd := int(f.Fd())
	go func() {
		defer close(w.done)
		var from int64
		for to := range w.kick {
			unix.SyncFileRange(fd, from, to-from, unix.SYNC_FILE_RANGE_WRITE)
			from = to
		}
	}()
	return w
}

// grew says the file has size bytes now.
func (w *growingWriteback) grew(size int64) {
	if size-w.started < writebackStep {
		return
	}
	select {
	case w.kick <- size:
		w.started = size
	default: // still on the last step: the next growth hands this on
	}
}

// stop waits for the goroutine; the file may be closed then.
func (w *growingWriteback) stop() {
	close(w.kick)
	<-w.done
}

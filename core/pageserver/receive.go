package pageserver

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
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
		if err := writeSlices(f, b); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", name, err)
		}
		size += int64(n)
		wb.grew(size)
	}
}

// fileWriteMax is the most written to a received file by one write(2).
// The page cache takes a write in folios as large as the write (up to
// 2 MiB): on a VM whose free memory is handed back to the host (virtio
// balloon free page reporting), the 2 MiB blocks come back cold, and
// 1.2 GB written 2 MiB at a time took up to 4 s (0.3 s only right after
// such a file was removed) where 512 KiB at a time took 0.3-0.6 s
// every time (dd, this test VM).
const fileWriteMax = 512 << 10

// writeSlices writes b to f in writes of at most fileWriteMax bytes.
func writeSlices(f *os.File, b []byte) error {
	for len(b) > 0 {
		k := min(len(b), fileWriteMax)
		if _, err := f.Write(b[:k]); err != nil {
			return err
		}
		b = b[k:]
	}
	return nil
}

// writebackStep is how much of a received file is written before its
// disk writes are started (writeback).
const writebackStep = 32 << 20

// writeback starts the disk writes of a received file as it grows
// (sync_file_range(SYNC_FILE_RANGE_WRITE), best effort), on a goroutine
// of its own since that may wait for the disk's queue: the fsync at the
// file's end then waits for its last part only, not for all of it (1.2 GB
// left to the flusher took 0.6 s to fsync here, most of a 1 GiB
// pre-dump's wait). It never makes anything durable itself; the fsync
// does.
type writeback struct {
	kick    chan int64 // the file's size, when it has grown by a step
	done    chan struct{}
	started int64 // the size last handed over
}

func startWriteback(f *os.File) *writeback {
	w := &writeback{kick: make(chan int64, 1), done: make(chan struct{})}
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
func (w *writeback) grew(size int64) {
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
func (w *writeback) stop() {
	close(w.kick)
	<-w.done
}

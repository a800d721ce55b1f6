package main

// stats-dump and stats-restore in CRIU's format, in the work directory, as
// runc's CRIU leaves them: podman's --print-stats reads them (through
// go-criu). The file is CRIU's image magic (0x55105940), the stats magic
// (0x57093306), the entry's length (little-endian uint32) and a StatsEntry
// (protobuf: dump = 1, restore = 2), times in microseconds. Only the
// fields ctr-cr measures are filled; the others are 0.

import (
	"encoding/binary"
	"fmt"
	"os"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ctr-cr/ctr-cr/container"
)

const (
	criuImgServiceMagic = 0x55105940
	criuStatsMagic      = 0x57093306
)

// usec is a duration in milliseconds as CRIU's microseconds.
func usec(ms float64) uint64 {
	if ms <= 0 {
		return 0
	}
	return uint64(ms * 1000)
}

// writeDumpStats writes st as stats-dump (dump_stats_entry: freezing,
// frozen, memdump and memwrite time, pages scanned, skipped by a parent,
// written; the lazy, page pipe and shared memory counts 0).
func writeDumpStats(path string, st *container.CheckpointStats) error {
	var e []byte
	var memdump, memwrite float64
	var scanned, written uint64
	if st.Dump != nil {
		memdump, memwrite = st.Dump.MemdumpMs, st.Dump.WriteMs
		scanned, written = st.Dump.PagesScanned, st.Dump.PagesWritten
	}
	// all 14 fields: go-criu's copy of the schema has them all required
	for i, v := range []uint64{usec(st.FreezingMs), usec(st.FrozenMs), usec(memdump), usec(memwrite), scanned, 0, written, 0, 0, 0, 0, 0, 0, 0} {
		e = protowire.AppendTag(e, protowire.Number(i+1), protowire.VarintType)
		e = protowire.AppendVarint(e, v)
	}
	return writeCriuStats(path, 1, e)
}

// writeRestoreStats writes st as stats-restore (restore_stats_entry:
// pages compared, skipped by COW, forking time, restore time, pages
// restored).
func writeRestoreStats(path string, st *container.RestoreStats) error {
	var forking, pages uint64
	if st.Restore != nil {
		forking, pages = usec(st.Restore.ForkingMs), st.Restore.PagesRestored
	}
	var e []byte
	for i, v := range []uint64{0, 0, forking, usec(st.TotalMs), pages} {
		e = protowire.AppendTag(e, protowire.Number(i+1), protowire.VarintType)
		e = protowire.AppendVarint(e, v)
	}
	return writeCriuStats(path, 2, e)
}

// writeCriuStats writes a stats file holding a StatsEntry whose field
// number field is the entry e.
func writeCriuStats(path string, field protowire.Number, e []byte) error {
	var msg []byte
	msg = protowire.AppendTag(msg, field, protowire.BytesType)
	msg = protowire.AppendBytes(msg, e)
	b := binary.LittleEndian.AppendUint32(nil, criuImgServiceMagic)
	b = binary.LittleEndian.AppendUint32(b, criuStatsMagic)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(msg)))
	if err := os.WriteFile(path, append(b, msg...), 0o600); err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	return nil
}

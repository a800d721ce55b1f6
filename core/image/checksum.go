package image

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"hash/crc32"
)

// Checksum algorithms of FileSum.checksum_algo. Images are written with
// CRC-32C: it catches the damage a checksum is here for (truncation, bit
// flips, a file swapped for another) at memory speed, while SHA-256 cost a
// quarter of a dump's time; SHA-256 sums are still verified.
const (
	algoCRC32C = "crc32c"
	algoSHA256 = "sha256"
)

// newSum returns the hash for algo ("" means SHA-256) and its size.
func newSum(algo string) (hash.Hash, error) {
	switch algo {
	case algoCRC32C:
		// MakeTable builds the Castagnoli table once, on first use
		// (not at start-up, where every command would pay for it)
		return crc32.New(crc32.MakeTable(crc32.Castagnoli)), nil
	case algoSHA256, "":
		return sha256.New(), nil
	}
	return nil, fmt.Errorf("unknown checksum algorithm %q", algo)
}

// writeAlgo is the algorithm new images use.
const writeAlgo = algoCRC32C

func newWriteSum() hash.Hash {
	h, _ := newSum(writeAlgo)
	return h
}

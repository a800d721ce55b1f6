// Package image reads and writes ctr-cr image directories, format version 3 (it reads versions 1 and 2 too).
//
// # Layout
//
// An image is a directory of files. inventory.img is the first file a
// restore reads: it records the format version, the dumping tool, kernel,
// architecture and CPU xsave features, the root pid, and the size and
// checksum (CRC-32C; SHA-256 also accepted) of every other file of the
// image. A dump writes it last, so a directory without a valid
// inventory.img is not a complete image.
//
// Every image file except the raw pages-*.img starts with a 4-byte magic
// naming its kind, followed by entries framed as
//
//	[u32 little-endian length][protobuf message]
//
// repeated to the end of the file. Page contents are stored raw, 4096-byte
// pages back to back, in pages-<name>.img; pagemap-<name>.img describes them
// as runs of pages in the order they follow each other in the pages file.
//
// # Kinds
//
// The table below is the one in kinds.go; the writer, the typed readers and
// the generic decoder (DecodeFile, FileJSON) are all driven by it. Adding a
// kind is adding one row there (and, when it refers to other files, a check
// in refs.go).
//
//	file name            magic  entries
//	inventory.img        CRIN   exactly one Inventory
//	pstree.img           CRPT   PstreeEntry*
//	core-<pid>.img       CRCO   exactly one TaskCore
//	mm-<pid>.img         CRMM   exactly one MmEntry
//	pagemap-<name>.img   CRPM   PagemapHead, then PagemapEntry*
//	pages-<name>.img     (none) raw pages, size a multiple of 4096
//	files.img            CRFL   FileEntry*
//	fdinfo-<pid>.img     CRFD   FdEntry*
//	parentmap-<pid>.img  CRPA   PagemapEntry*
//	spec.dump, ctr-cr.json, container.json, descriptors.json,
//	ctr-cr-predump.json, tmpfs-<n>.tar
//	                     (none) the container layer's files (Layer kinds):
//	                            opaque, listed with their checksums from
//	                            format version 3 on (unlisted before)
//
// <pid> is a decimal pid in 1..2^31-1 without leading zeros; <name> is one or
// more of [A-Za-z0-9_-], by convention "<pid>", "shmem-<id>" or
// "cowbase-<pid>" (pages a process's children share that it no longer has:
// see MmEntry.cow_parent_runs).
//
// # Validation
//
// Open validates a whole image before a restore touches anything: the
// inventory (magic, version, file list), that every listed file exists as a
// regular file with the recorded size and checksum, that no unlisted *.img
// file is present, that every file decodes (magic, framing, message types,
// entry counts), and the references between files (see refs.go). Typed
// readers re-verify the checksum of the file they decode, so what they return
// is what Open validated. A damaged or hostile image yields an *Error naming
// the directory, file, and where known the entry index and byte offset; it
// never panics. No entry may be longer than MaxEntrySize nor than the bytes
// left in its file, so the memory a decoder uses is bounded by a small
// multiple of the file's size.
//
// # Writing
//
// Create makes the directory (mode 0700) when missing and refuses one that
// already holds *.img files. Files are created with O_EXCL and mode 0600 and
// hashed while written. Finish writes inventory.img last, through a
// temporary file renamed into place; Abort removes everything the Writer
// created, so `defer w.Abort()` followed by `w.Finish(inv)` leaves either a
// complete image or nothing.
package image

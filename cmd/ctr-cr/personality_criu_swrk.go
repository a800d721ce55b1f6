package main

// `criu swrk FD` for the version probe of container platforms. Podman asks
// a `criu` on its PATH for CRIU's version over CRIU's RPC (go-criu runs
// `criu swrk 3` with one end of a SOCK_SEQPACKET pair as fd 3, sends a
// criu_req of type VERSION and reads a criu_resp) and refuses to
// checkpoint or restore without at least 3.11, although the checkpoint
// itself goes through the runtime. A host with only ctr-cr installed
// satisfies it with a symlink named criu to ctr-cr on podman's PATH
// (docs/platforms.md): ctr-cr then answers the VERSION request, and refuses
// every other request by name (checkpoint and restore go through the
// runtime, ctr-cr as runc).

import (
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
)

// The CRIU version ctr-cr answers with: the RPC's features podman relies
// on (its check is 3.11 for containers, 3.16 for pods) are the runtime's.
const (
	swrkVersionMajor = 4
	swrkVersionMinor = 2
	criuReqVersion   = 10 // criu_req_type VERSION
)

// criuSwrkMain serves `criu swrk FD` when argv[0]'s basename is criu; ok
// is false for any other command line (left to ctr-cr's other personalities).
func criuSwrkMain(argv []string) (code int, ok bool) {
	if len(argv) != 3 || filepath.Base(argv[0]) != "criu" || argv[1] != "swrk" {
		return 0, false
	}
	fd, err := strconv.Atoi(argv[2])
	if err != nil || fd < 0 {
		os.Stderr.WriteString("criu swrk: want a socket fd number\n")
		return 1, true
	}
	return serveSwrk(fd), true
}

// serveSwrk answers requests on the socket fd until its peer closes it.
func serveSwrk(fd int) int {
	buf := make([]byte, 64<<10)
	for {
		n, _, _, _, err := unix.Recvmsg(fd, buf, nil, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return 0
		}
		if _, err := unix.Write(fd, swrkResponse(buf[:n])); err != nil {
			return 1
		}
	}
}

// swrkResponse is the criu_resp to the criu_req req: its version for
// VERSION; for anything else, or what cannot be read, a failure naming it.
func swrkResponse(req []byte) []byte {
	typ := uint64(0)
	for len(req) > 0 {
		num, wt, n := protowire.ConsumeTag(req)
		if n < 0 {
			break
		}
		req = req[n:]
		if num == 1 && wt == protowire.VarintType {
			v, m := protowire.ConsumeVarint(req)
			if m < 0 {
				break
			}
			typ = v
		}
		m := protowire.ConsumeFieldValue(num, wt, req)
		if m < 0 {
			break
		}
		req = req[m:]
	}
	var resp []byte
	resp = protowire.AppendTag(resp, 1, protowire.VarintType) // type
	resp = protowire.AppendVarint(resp, typ)
	resp = protowire.AppendTag(resp, 2, protowire.VarintType) // success
	if typ != criuReqVersion {
		resp = protowire.AppendVarint(resp, 0)
		resp = protowire.AppendTag(resp, 9, protowire.BytesType) // cr_errmsg
		msg := "ctr-cr as criu answers only the VERSION request (type " + strconv.FormatUint(typ, 10) + " asked); checkpoint and restore go through the OCI runtime (ctr-cr as runc)"
		return protowire.AppendString(resp, msg)
	}
	resp = protowire.AppendVarint(resp, 1)
	var v []byte
	v = protowire.AppendTag(v, 1, protowire.VarintType) // major_number
	v = protowire.AppendVarint(v, swrkVersionMajor)
	v = protowire.AppendTag(v, 2, protowire.VarintType) // minor_number
	v = protowire.AppendVarint(v, swrkVersionMinor)
	v = protowire.AppendTag(v, 6, protowire.BytesType) // name
	v = protowire.AppendString(v, "ctr-cr")
	resp = protowire.AppendTag(resp, 10, protowire.BytesType) // version
	return protowire.AppendBytes(resp, v)
}

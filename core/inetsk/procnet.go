package inetsk

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// procNetEntry reads the line of socket ino in /proc/net/<table> of the
// calling thread's network namespace (raw, raw6, icmp, icmp6: the raw and
// ping sockets, which have no inet_diag handler or none that reports what
// these lines do). ok is false when the socket is not listed.
//
// A line is "sl: local:port remote:port state txq:rxq tr:when retr uid
// timeout inode ...", addresses in hex as the kernel's 32-bit words of the
// network-order address.
func procNetEntry(table string, family int, ino uint64) (e DiagEntry, ok bool, err error) {
	f, err := os.Open("/proc/thread-self/net/" + table)
	if err != nil {
		return e, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || !strings.HasSuffix(fs[0], ":") {
			continue
		}
		if n, err := strconv.ParseUint(fs[9], 10, 64); err != nil || n != ino {
			continue
		}
		e = DiagEntry{Family: family, Ino: ino}
		var err error
		if e.Src, e.SrcPort, err = procAddr(fs[1]); err != nil {
			return e, false, fmt.Errorf("%s: %w", table, err)
		}
		if e.Dst, e.DstPort, err = procAddr(fs[2]); err != nil {
			return e, false, fmt.Errorf("%s: %w", table, err)
		}
		st, err1 := strconv.ParseUint(fs[3], 16, 8)
		q := strings.SplitN(fs[4], ":", 2)
		if err1 != nil || len(q) != 2 {
			return e, false, fmt.Errorf("%s: bad line %q", table, sc.Text())
		}
		tx, err1 := strconv.ParseUint(q[0], 16, 32)
		rx, err2 := strconv.ParseUint(q[1], 16, 32)
		if err1 != nil || err2 != nil {
			return e, false, fmt.Errorf("%s: bad queues %q", table, fs[4])
		}
		e.State, e.WQueue, e.RQueue = int(st), uint32(tx), uint32(rx)
		return e, true, nil
	}
	return e, false, sc.Err()
}

// procAddr decodes "HEX:PORT" of /proc/net/*.
func procAddr(s string) (a [16]byte, port uint16, err error) {
	h, p, found := strings.Cut(s, ":")
	if !found || (len(h) != 8 && len(h) != 32) {
		return a, 0, fmt.Errorf("bad address %q", s)
	}
	for i := 0; i < len(h)/8; i++ {
		w, err := strconv.ParseUint(h[i*8:i*8+8], 16, 32)
		if err != nil {
			return a, 0, fmt.Errorf("bad address %q", s)
		}
		binary.NativeEndian.PutUint32(a[i*4:], uint32(w))
	}
	v, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return a, 0, fmt.Errorf("bad port %q", s)
	}
	return a, uint16(v), nil
}

// procTable names the /proc/net table of a raw (typ SOCK_RAW) or ping
// socket.
func procTable(family, typ int) string {
	t := "icmp"
	if typ == unix.SOCK_RAW {
		t = "raw"
	}
	if family == unix.AF_INET6 {
		t += "6"
	}
	return t
}

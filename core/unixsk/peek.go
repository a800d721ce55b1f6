package unixsk

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

const (
	// maxRecords bounds the messages Dump reads from one queue, a guard
	// against looping forever should the kernel not advance the offset.
	maxRecords = 1 << 22
	// ctrlSize fits SCM_MAX_FD (253) descriptors plus credentials, a
	// pidfd and a timestamp.
	ctrlSize  = 4096
	peekFlags = unix.MSG_PEEK | unix.MSG_DONTWAIT | unix.MSG_CMSG_CLOEXEC
)

// peeker peeks at the receive queue of one socket.
type peeker struct {
	fd  int
	ino uint64
	// ts: every real record carries a timestamp control message, so a
	// 0 answer without one is the seqpacket EOF, not an empty record.
	ts    bool
	ctrl  []byte
	creds []*unix.Ucred // per element of the peeked queue (nil: none)
	// keepFds: SCM_RIGHTS descriptors are kept (per element, in fds)
	// instead of refused; the caller owns them (closeFds on error).
	keepFds bool
	fds     [][]int  // per element: descriptors installed for it
	senders []string // per element: the sender address ("" unbound)
	labels  bool     // some element carried a security label (SCM_SECURITY)
}

// closeFds closes every kept descriptor not handed over yet.
func (p *peeker) closeFds() {
	for _, fs := range p.fds {
		closeAll(fs)
	}
	p.fds = nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// peekResult is one successful peek.
type peekResult struct {
	n    int         // return value: the whole message length with MSG_TRUNC
	ts   bool        // a timestamp control message came with it
	cred *unix.Ucred // sender credentials attached to the data, if any
	fds  []int       // SCM_RIGHTS descriptors installed in our process (keepFds)
	from string      // sender address, "" if unbound or not reported
}

// peekOne does one recvmsg(MSG_PEEK) into buf. Control messages are
// checked: descriptors the kernel installed in our process for SCM_PIDFD
// are closed again, those for SCM_RIGHTS are returned in fds when keepFds
// is set (else closed, and the peek fails with *UnsupportedError "fd
// passing in flight"); real credentials (a sender pid; a message sent with
// no credentials attached reads as pid 0) are returned in cred. It retries
// on EINTR and returns EAGAIN unwrapped. On error no descriptor is left open.
func (p *peeker) peekOne(buf []byte, flags int) (peekResult, error) {
	if p.ctrl == nil {
		p.ctrl = make([]byte, ctrlSize)
	}
	var n, oobn, rflags int
	var from unix.Sockaddr
	var err error
	for {
		n, oobn, rflags, from, err = unix.Recvmsg(p.fd, buf, p.ctrl, flags)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return peekResult{}, err
	}
	r := peekResult{n: n}
	if sa, ok := from.(*unix.SockaddrUnix); ok {
		r.from = sa.Name
	}
	var refuse error
	msgs, perr := unix.ParseSocketControlMessage(p.ctrl[:oobn])
	if perr != nil {
		return r, fmt.Errorf("unix socket:[%d]: parse control messages: %w", p.ino, perr)
	}
	defer func() {
		if refuse != nil {
			closeAll(r.fds)
			r.fds = nil
		}
	}()
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_RIGHTS:
			fds, _ := unix.ParseUnixRights(m)
			if p.keepFds {
				r.fds = append(r.fds, fds...)
				continue
			}
			closeAll(fds)
			refuse = unsupported(p.ino, "fd passing in flight (SCM_RIGHTS with %d fds queued)", len(fds))
		case unix.SCM_PIDFD:
			if len(m.Data) >= 4 {
				unix.Close(int(int32(binary.NativeEndian.Uint32(m.Data))))
			}
		case unix.SCM_CREDENTIALS:
			// kept with the data and sent again with it on restore
			if c, err := unix.ParseUnixCredentials(m); err == nil && c.Pid != 0 {
				r.cred = c
			}
		case unix.SCM_SECURITY:
			p.labels = true
		case unix.SCM_TIMESTAMP, unix.SCM_TIMESTAMPNS, unix.SO_TIMESTAMP_NEW, unix.SO_TIMESTAMPNS_NEW, unix.SCM_TIMESTAMPING:
			r.ts = true
		}
	}
	if refuse == nil && rflags&unix.MSG_CTRUNC != 0 {
		refuse = unsupported(p.ino, "fd passing in flight (control data truncated)")
	}
	return r, refuse
}

// add records the per-element facts of one peeked element.
func (p *peeker) add(r peekResult) {
	p.creds = append(p.creds, r.cred)
	p.fds = append(p.fds, r.fds)
	p.senders = append(p.senders, r.from)
}

func (p *peeker) setPeekOff(off int) error {
	if err := unix.SetsockoptInt(p.fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, off); err != nil {
		return fmt.Errorf("unix socket:[%d]: set SO_PEEK_OFF=%d: %w", p.ino, off, err)
	}
	return nil
}

// stream peeks the inq bytes of a stream socket. One recv normally returns
// them all; the peek offset lets it go on where the kernel stopped early
// (it does not glue data of senders with different credentials).
func (p *peeker) stream(inq int) ([][]byte, error) {
	if inq == 0 {
		return nil, nil
	}
	if err := p.setPeekOff(0); err != nil {
		return nil, err
	}
	buf := make([]byte, inq)
	got := 0
	var q [][]byte
	for got < inq {
		r, err := p.peekOne(buf[got:], peekFlags)
		if err == unix.EAGAIN || (err == nil && r.n == 0) {
			break
		}
		if err != nil {
			return nil, wrapPeekErr(p.ino, err)
		}
		// one recv never glues data of senders with different
		// credentials: each chunk keeps its own
		q = append(q, buf[got:got+r.n])
		p.add(r)
		got += r.n
	}
	if got != inq {
		return nil, fmt.Errorf("unix socket:[%d]: peeked %d of the %d queued bytes", p.ino, got, inq)
	}
	return q, nil
}

// records peeks the messages of a dgram/seqpacket socket one by one with
// SO_PEEK_OFF: each MSG_PEEK advances the offset by the bytes it copied,
// and MSG_TRUNC makes recv return the whole length, so a message larger
// than the buffer is peeked again from its start with a larger buffer.
//
// Zero-length messages: the kernel (__skb_try_recv_from_queue) returns an
// empty skb at the peek offset only once, marking it "peeked", and skips
// it from then on (else the offset, which does not move, would return it
// forever). An empty head message the task already peeked itself (plain
// MSG_PEEK marks it too) would thus be invisible to the offset walk: the
// head is peeked plainly first, which also marks it, so the walk then
// always skips it and it is added back here. Empty messages past the head
// that were peeked with an offset before (an earlier Dump of the same
// socket) cannot be seen and are lost.
func (p *peeker) records() ([][]byte, error) {
	buf := make([]byte, 64<<10)
	r, err := p.peekOne(buf, peekFlags|unix.MSG_TRUNC)
	if err == unix.EAGAIN || (err == nil && r.n == 0 && p.ts && !r.ts) {
		return nil, nil // empty queue (or seqpacket EOF)
	}
	if err != nil {
		return nil, wrapPeekErr(p.ino, err)
	}
	headEmpty := r.n == 0
	if !headEmpty {
		closeAll(r.fds) // peeked again by the walk below
		r.fds = nil
	}

	if err := p.setPeekOff(0); err != nil {
		return nil, err
	}
	var q [][]byte
	if headEmpty {
		q = append(q, []byte{})
		p.add(r)
	}
	off := 0
	for {
		if len(q) > maxRecords {
			return nil, fmt.Errorf("unix socket:[%d]: more than %d queued messages", p.ino, maxRecords)
		}
		r, err := p.peekOne(buf, peekFlags|unix.MSG_TRUNC)
		if err == unix.EAGAIN || (err == nil && r.n == 0 && p.ts && !r.ts) {
			return q, nil
		}
		if err != nil {
			return nil, wrapPeekErr(p.ino, err)
		}
		if r.n > len(buf) {
			// Truncated: the offset moved by len(buf) only. Go back to
			// the start of the message and peek it whole.
			closeAll(r.fds)
			buf = make([]byte, r.n)
			if err := p.setPeekOff(off); err != nil {
				return nil, err
			}
			continue
		}
		q = append(q, append([]byte{}, buf[:r.n]...))
		p.add(r)
		off += r.n
	}
}

// enableTimestamps makes every peeked record carry a timestamp control
// message, turning SO_TIMESTAMP on for the duration of the peek when no
// receive timestamp option is on already. It returns the undo function.
func (p *peeker) enableTimestamps() (func() error, error) {
	for _, opt := range []int{unix.SO_TIMESTAMP_OLD, unix.SO_TIMESTAMPNS_OLD, unix.SO_TIMESTAMP_NEW, unix.SO_TIMESTAMPNS_NEW} {
		if v, err := unix.GetsockoptInt(p.fd, unix.SOL_SOCKET, opt); err == nil && v != 0 {
			p.ts = true
			return func() error { return nil }, nil
		}
	}
	// SO_TIMESTAMP would clear SOCK_TSTAMP_NEW, which SO_TIMESTAMPING
	// users may rely on: leave those sockets alone.
	if v, err := unix.GetsockoptInt(p.fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPING); err == nil && v != 0 {
		return nil, unsupported(p.ino, "shut-down seqpacket socket with SO_TIMESTAMPING in use")
	}
	if err := unix.SetsockoptInt(p.fd, unix.SOL_SOCKET, unix.SO_TIMESTAMP_OLD, 1); err != nil {
		return nil, fmt.Errorf("unix socket:[%d]: enable SO_TIMESTAMP: %w", p.ino, err)
	}
	p.ts = true
	return func() error {
		if err := unix.SetsockoptInt(p.fd, unix.SOL_SOCKET, unix.SO_TIMESTAMP_OLD, 0); err != nil {
			return fmt.Errorf("unix socket:[%d]: disable SO_TIMESTAMP: %w", p.ino, err)
		}
		return nil
	}, nil
}

func wrapPeekErr(ino uint64, err error) error {
	if _, ok := err.(*UnsupportedError); ok {
		return err
	}
	return fmt.Errorf("unix socket:[%d]: peek queue: %w", ino, err)
}

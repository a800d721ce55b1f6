package unixsk

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Describe names the key facts of a dumped unix socket in one line, for
// ctr-cr show: type; LISTEN, "waiting on socket:[L]" (in an accept
// queue), "peer socket:[P]", "peer gone" (closed) or unconnected; the peer's or listener's name
// ("to"); its own name ("bound", "(deleted)"); "external" peer; listen
// backlog and waiting connections; queued messages and bytes, the data of
// an unaccepted connection, files in flight, credentials, shutdown, the
// socket-level options away from a fresh socket's.
func Describe(s *imagepb.UnixSocket) string {
	if s == nil {
		return "unix socket (no description)"
	}
	var b strings.Builder
	switch s.Type {
	case unix.SOCK_STREAM:
		b.WriteString("stream")
	case unix.SOCK_DGRAM:
		b.WriteString("dgram")
	case unix.SOCK_SEQPACKET:
		b.WriteString("seqpacket")
	default:
		fmt.Fprintf(&b, "type-%d", s.Type)
	}
	switch {
	case s.State == tcpListen:
		b.WriteString(" LISTEN")
	case s.ListenerIno != 0 && s.PeerIno == 0:
		fmt.Fprintf(&b, " waiting on socket:[%d]", s.ListenerIno)
	case s.PeerGone:
		b.WriteString(" peer gone")
		if s.ErrReset {
			b.WriteString(" (ECONNRESET pending)")
		}
	case s.PeerIno != 0:
		fmt.Fprintf(&b, " peer socket:[%d]", s.PeerIno)
	default:
		b.WriteString(" unconnected")
	}
	if s.PeerName != "" {
		fmt.Fprintf(&b, " to %q", s.PeerName)
	}
	if s.Name != "" {
		fmt.Fprintf(&b, " bound %q", s.Name)
		if s.NameDeleted {
			b.WriteString(" (deleted)")
		}
	}
	if s.External {
		b.WriteString(" external")
	}
	if s.State == tcpListen {
		fmt.Fprintf(&b, " backlog %d waiting %d", s.Backlog, len(s.Icons))
		if len(s.GoneIcons) > 0 {
			fmt.Fprintf(&b, " (%d closed)", len(s.GoneIcons))
		}
	}
	if len(s.Queue) > 0 {
		fmt.Fprintf(&b, " queued %d msg/%d bytes", len(s.Queue), queueBytes(s))
	}
	if e := s.Embryo; e != nil && len(e.Queue) > 0 {
		fmt.Fprintf(&b, " unaccepted %d msg/%d bytes", len(e.Queue), queueBytes(e))
	}
	nfds, ncreds := 0, 0
	for _, q := range []*imagepb.UnixSocket{s, s.Embryo} {
		for _, f := range q.GetFds() {
			nfds += len(f.GetFileIds())
		}
		for _, c := range q.GetCreds() {
			if c.GetPid() != 0 {
				ncreds++
			}
		}
	}
	if nfds > 0 {
		fmt.Fprintf(&b, " fds in flight %d", nfds)
	}
	if ncreds > 0 {
		fmt.Fprintf(&b, " creds %d", ncreds)
	}
	if s.Shutdown != 0 {
		fmt.Fprintf(&b, " shutdown %s", map[uint32]string{1: "rd", 2: "wr", 3: "rdwr"}[s.Shutdown&3])
	}
	if o := describeOpts(s); o != "" {
		b.WriteString(" options " + o)
	}
	return b.String()
}

// describeOpts lists the socket-level options of s set away from a fresh
// socket's ("" when none): SO_REUSEADDR=1,SO_RCVTIMEO=1.5s,...
func describeOpts(s *imagepb.UnixSocket) string {
	var l []string
	for _, o := range s.Opts {
		name := fmt.Sprintf("option-%d", o.Name)
		if io := intOpt(int(o.Name)); io != nil {
			name = io.Name
		}
		l = append(l, fmt.Sprintf("%s=%d", name, o.Value))
	}
	for _, t := range []struct {
		name string
		us   int64
	}{{"SO_RCVTIMEO", s.RcvtimeoUs}, {"SO_SNDTIMEO", s.SndtimeoUs}} {
		if t.us != 0 {
			l = append(l, fmt.Sprintf("%s=%gs", t.name, float64(t.us)/1e6))
		}
	}
	if s.LingerOn || s.LingerSecs != 0 {
		l = append(l, fmt.Sprintf("SO_LINGER=%v/%ds", s.LingerOn, s.LingerSecs))
	}
	if s.BindDev != "" {
		l = append(l, fmt.Sprintf("SO_BINDTODEVICE=%q", s.BindDev))
	}
	if len(s.Filter) > 0 {
		l = append(l, fmt.Sprintf("SO_ATTACH_FILTER=%d insns", len(s.Filter)/8))
	}
	if s.FilterLocked {
		l = append(l, "SO_LOCK_FILTER=1")
	}
	return strings.Join(l, ",")
}

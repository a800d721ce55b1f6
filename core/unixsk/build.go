package unixsk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Build recreates, in the caller's process and network namespace, every
// unix socket of an image at once (they refer to each other: names,
// peers, accept queues) and returns our fd for each, by inode.
//
// Contract: socks are what DumpWith recorded for every unix socket of the
// image (a peer missing from socks must be marked External); open opens
// the files sent in flight (nil: none may be). The fds are blocking and
// close-on-exec. On error nothing is left open and no socket file Build
// created is left behind. The order of the work:
//
//  1. sockets are created; a connected pair of unbound (or autobound)
//     sockets is made with socketpair;
//  2. names are bound (a stale socket file at the path is removed first,
//     see bindName), mode and owner of the socket file set; a deleted
//     name is bound where it never shows on disk (bindScratch); listeners
//     listen with their backlog;
//  3. stream/seqpacket connections whose one end carries the name of a
//     listener of the image are rebuilt by connect + accept, so both ends
//     report the same names as before; without such a listener they are
//     rebuilt with socketpair, their path names bound where they do not
//     show on disk (abstract names are lost);
//  4. the clients waiting in an accept queue connect again, in queue
//     order, and send what their unaccepted connection held (embryo);
//  5. dgram queues are refilled with sendto from their sender: the socket
//     of the image bound to the sender's address, else a temporary socket
//     bound to that address when it is abstract and free, else an unbound
//     one (the receiver then sees no sender address);
//  6. dgram sockets connect to their peer's name; sockets whose peer is
//     outside the image (External) connect to PeerName again;
//  7. connected queues are refilled from the peer, options set (the
//     socket filter and its lock last) and shutdown re-applied.
//
// A socket whose peer is gone (PeerGone) is connected to a transient peer
// (ghost.go): accepted from its listener of the image when it carries a
// listener's name, else made with socketpair; the transient peer is bound
// to the dead peer's name, refills the queue and is closed last.
func Build(socks []*imagepb.UnixSocket, open OpenFile) (fds map[uint64]int, err error) {
	return BuildIn(socks, open, nil)
}

// InRoot runs fn where the path names of the image resolve (bind,
// connect, sendto, stat, chmod, unlink by path): e.g. on a thread in a
// container's mount namespace and root (internal/threadns.Root). nil: in
// the caller's own.
type InRoot func(fn func() error) error

func (in InRoot) do(fn func() error) error {
	if in == nil {
		return fn()
	}
	return in(fn)
}

// BuildIn is Build with the path names of the image resolved by in (the
// sockets themselves are still created by the caller, in its network
// namespace).
func BuildIn(socks []*imagepb.UnixSocket, open OpenFile, in InRoot) (fds map[uint64]int, err error) {
	b := &builder{byIno: map[uint64]*imagepb.UnixSocket{}, fd: map[uint64]int{}, bound: map[uint64]string{}, open: open, lim: readLimits(), defSnd: map[uint64]uint32{}, in: in}
	if err := b.index(socks); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			b.cleanup()
		}
		if b.scratch != "" {
			os.RemoveAll(b.scratch)
		}
		for _, fd := range b.temps {
			unix.Close(fd)
		}
	}()
	for _, step := range []func() error{b.create, b.bindAll, b.acceptConns, b.ghostAccept, b.icons, b.dgramRefill, b.connectAll, b.streamRefill, b.ghostRefill, b.finish, b.ghostClose} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	for _, p := range b.unlink {
		if err := b.in.do(func() error { return os.Remove(p) }); err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("unix: unlink the deleted name %s: %w", p, err)
		}
	}
	b.unlink, b.created = nil, nil
	return b.fd, nil
}

// builder is the state of one Build.
type builder struct {
	socks   []*imagepb.UnixSocket
	byIno   map[uint64]*imagepb.UnixSocket
	fd      map[uint64]int    // our fd of each socket
	bound   map[uint64]string // where each named socket was bound
	open    OpenFile
	lim     limits
	defSnd  map[uint64]uint32
	conns   [][2]*imagepb.UnixSocket // stream/seqpacket connections: [client, server] for accept, else a pair
	viaAcc  map[uint64]bool          // conns[i] rebuilt by connect+accept (by client ino)
	unlink  []string                 // deleted names, removed at the end
	created []string                 // socket files we bound (removed on error)
	temps   []int                    // temporary dgram senders
	ghosts  map[uint64]ghost         // transient peers of the sockets whose peer is gone
	in      InRoot                   // where path names resolve
	where   map[uint64]InRoot        // where a socket's bound name resolves, when not in (see bindScratch)
	scratch string                   // the directory deleted names are bound in ("": none yet)
}

func (b *builder) index(socks []*imagepb.UnixSocket) error {
	b.socks = socks
	for _, s := range socks {
		if s == nil {
			return errors.New("unix: empty socket description")
		}
		if err := validate(s); err != nil {
			return err
		}
		if _, dup := b.byIno[s.Ino]; dup {
			return fmt.Errorf("unix socket:[%d]: twice in the image", s.Ino)
		}
		b.byIno[s.Ino] = s
	}
	for _, s := range socks {
		if s.PeerIno != 0 && b.byIno[s.PeerIno] == nil && !s.External {
			return fmt.Errorf("unix socket:[%d]: its peer socket:[%d] is neither in the image nor external", s.Ino, s.PeerIno)
		}
		if s.ListenerIno != 0 {
			l := b.byIno[s.ListenerIno]
			if l == nil && !s.External {
				return fmt.Errorf("unix socket:[%d]: its listener socket:[%d] is neither in the image nor external", s.Ino, s.ListenerIno)
			}
			if l != nil && (l.State != tcpListen || l.Type != s.Type || !contains(l.Icons, s.Ino)) {
				return fmt.Errorf("unix socket:[%d]: socket:[%d] is not a listener with it in its accept queue", s.Ino, s.ListenerIno)
			}
		}
	}
	return nil
}

// validate checks one description of a (maybe hostile) image.
func validate(s *imagepb.UnixSocket) error {
	switch s.Type {
	case unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET:
	default:
		return fmt.Errorf("unix socket:[%d]: unsupported type %d", s.Ino, s.Type)
	}
	if s.Ino == 0 {
		return errors.New("unix socket with inode 0")
	}
	switch s.State {
	case 0, tcpEstablished, tcpClose:
	case tcpListen:
		if s.Type == unix.SOCK_DGRAM || s.Name == "" {
			return fmt.Errorf("unix socket:[%d]: listening but dgram or unbound", s.Ino)
		}
	default:
		return fmt.Errorf("unix socket:[%d]: bad state %d", s.Ino, s.State)
	}
	if len(s.Name) > 107 || (s.Name != "" && s.Name[0] != '/' && s.Name[0] != '@' && s.BindDir == "") {
		return fmt.Errorf("unix socket:[%d]: bad name %q", s.Ino, s.Name)
	}
	if s.BindDir != "" && (s.BindDir[0] != '/' || s.Name == "" || s.Name[0] == '/' || s.Name[0] == '@' || s.NameDeleted) {
		return fmt.Errorf("unix socket:[%d]: name %q with a binding directory %q", s.Ino, s.Name, s.BindDir)
	}
	if s.Shutdown&^(rcvShutdown|sendShutdown) != 0 {
		return fmt.Errorf("unix socket:[%d]: bad shutdown bits %#x", s.Ino, s.Shutdown)
	}
	if s.External && (s.PeerName == "" || s.PeerName[0] != '/' && s.PeerName[0] != '@' || len(s.PeerName) > 107) {
		return fmt.Errorf("unix socket:[%d]: external peer without a usable name %q", s.Ino, s.PeerName)
	}
	if s.PeerGone && (s.PeerIno != 0 || s.External || s.ListenerIno != 0 || s.State != tcpEstablished) {
		return fmt.Errorf("unix socket:[%d]: peer gone but peer %d, listener %d, external %v, state %d", s.Ino, s.PeerIno, s.ListenerIno, s.External, s.State)
	}
	if s.PeerGone && (len(s.PeerName) > 107 || s.PeerName != "" && s.PeerName[0] != '/' && s.PeerName[0] != '@') {
		return fmt.Errorf("unix socket:[%d]: bad name %q of its closed peer", s.Ino, s.PeerName)
	}
	if s.ErrReset && (!s.PeerGone || s.Type == unix.SOCK_DGRAM) {
		return fmt.Errorf("unix socket:[%d]: pending ECONNRESET on a socket whose peer is not a closed stream/seqpacket peer", s.Ino)
	}
	for _, q := range []*imagepb.UnixSocket{s, s.Embryo} {
		if q == nil {
			continue
		}
		n := len(q.Queue)
		if len(q.Creds) != 0 && len(q.Creds) != n || len(q.Fds) != 0 && len(q.Fds) != n || len(q.Senders) != 0 && len(q.Senders) != n {
			return fmt.Errorf("unix socket:[%d]: %d queued elements but %d creds, %d fd lists, %d senders", s.Ino, n, len(q.Creds), len(q.Fds), len(q.Senders))
		}
	}
	if err := validateGoneIcons(s); err != nil {
		return err
	}
	if err := validateOpts(s); err != nil {
		return err
	}
	if s.Embryo != nil && s.ListenerIno == 0 {
		return fmt.Errorf("unix socket:[%d]: unaccepted connection data but no listener", s.Ino)
	}
	return nil
}

func contains(l []uint64, v uint64) bool {
	for _, x := range l {
		if x == v {
			return true
		}
	}
	return false
}

// unnamed: no name, or one the kernel chose (rebuilt by socketpair).
func unnamed(s *imagepb.UnixSocket) bool { return s.Name == "" || autobound(s.Name) }

// listenerNamed finds the listener of the image that gave an accepted
// socket its name (same name and type, same socket file for paths).
func (b *builder) listenerNamed(x *imagepb.UnixSocket) *imagepb.UnixSocket {
	if x.Name == "" {
		return nil
	}
	for _, l := range b.socks {
		if l.State == tcpListen && l.Type == x.Type && l.Name == x.Name && l.Ino != x.Ino && (x.Name[0] == '@' || l.VfsIno == x.VfsIno) {
			return l
		}
	}
	return nil
}

// create makes every socket: pairs with socketpair, the rest with socket.
func (b *builder) create() error {
	b.viaAcc = map[uint64]bool{}
	done := map[uint64]bool{}
	for _, s := range b.socks {
		if done[s.Ino] {
			continue
		}
		if s.PeerGone {
			if err := b.ghostCreate(s); err != nil {
				return err
			}
			continue
		}
		p := b.byIno[s.PeerIno]
		if s.PeerIno != 0 && p != nil && p.PeerIno == s.Ino && p.Ino != s.Ino {
			if p.Type != s.Type {
				return fmt.Errorf("unix pair %d-%d: types differ (%d, %d)", s.Ino, p.Ino, s.Type, p.Type)
			}
			done[p.Ino] = true
			stream := s.Type != unix.SOCK_DGRAM
			if stream {
				// connect+accept keeps the names when one end was accepted
				if l := b.listenerNamed(p); l != nil {
					b.conns = append(b.conns, [2]*imagepb.UnixSocket{s, p})
					b.viaAcc[s.Ino] = true
					if err := b.socket(s); err != nil {
						return err
					}
					continue
				}
				if l := b.listenerNamed(s); l != nil {
					b.conns = append(b.conns, [2]*imagepb.UnixSocket{p, s})
					b.viaAcc[p.Ino] = true
					if err := b.socket(p); err != nil {
						return err
					}
					continue
				}
			}
			if stream || unnamed(s) && unnamed(p) {
				if stream {
					b.conns = append(b.conns, [2]*imagepb.UnixSocket{s, p})
				}
				fds, err := unix.Socketpair(unix.AF_UNIX, int(s.Type)|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return fmt.Errorf("unix pair %d-%d: socketpair: %w", s.Ino, p.Ino, err)
				}
				b.fd[s.Ino], b.fd[p.Ino] = fds[0], fds[1]
				b.noteDefaults(s, p)
				if !stream {
					// dgram pair: its queues go peer to peer
					b.conns = append(b.conns, [2]*imagepb.UnixSocket{s, p})
				}
				continue
			}
			// two bound dgram sockets connected to each other: by name
			if err := b.socket(p); err != nil {
				return err
			}
		}
		if err := b.socket(s); err != nil {
			return err
		}
	}
	return nil
}

func (b *builder) socket(s *imagepb.UnixSocket) error {
	fd, err := unix.Socket(unix.AF_UNIX, int(s.Type)|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("unix socket:[%d]: socket: %w", s.Ino, err)
	}
	b.fd[s.Ino] = fd
	b.noteDefaults(s)
	return nil
}

// noteDefaults remembers the fresh sockets' SO_SNDBUF, kept when the image
// recorded none.
func (b *builder) noteDefaults(ss ...*imagepb.UnixSocket) {
	for _, s := range ss {
		if v, err := unix.GetsockoptInt(b.fd[s.Ino], unix.SOL_SOCKET, unix.SO_SNDBUF); err == nil {
			b.defSnd[s.Ino] = uint32(v)
		}
	}
}

// bindAll binds the named sockets that are not accepted ends or pair
// ends, then makes the listeners listen.
func (b *builder) bindAll() error {
	for _, s := range b.socks {
		fd, ok := b.fd[s.Ino]
		if !ok || s.Name == "" {
			continue
		}
		if b.inPair(s) {
			if b.pairNamed(s) {
				if err := b.bindScratch(fd, s); err != nil {
					return err
				}
			}
			continue
		}
		if detachedName(s) {
			if err := b.bindScratch(fd, s); err != nil {
				return err
			}
			continue
		}
		in := b.in
		if s.BindDir != "" {
			in = cwdIn(b.in, s.BindDir)
			if b.where == nil {
				b.where = map[uint64]InRoot{}
			}
			b.where[s.Ino] = in
		}
		var unlink string
		err := in.do(func() (err error) {
			unlink, err = bindName(fd, s)
			return err
		})
		if err != nil {
			return err
		}
		b.bound[s.Ino] = s.Name
		if s.Name[0] != '@' {
			sa, err := unix.Getsockname(fd)
			if u, ok := sa.(*unix.SockaddrUnix); err == nil && ok {
				b.bound[s.Ino] = u.Name
			}
			b.created = append(b.created, filepath.Join(s.BindDir, b.bound[s.Ino]))
		}
		if unlink != "" {
			b.unlink = append(b.unlink, unlink)
		}
	}
	for _, s := range b.socks {
		if s.State != tcpListen {
			continue
		}
		backlog := int(s.Backlog)
		if backlog <= 0 || backlog > 1<<16 {
			backlog = unix.SOMAXCONN
		}
		if err := unix.Listen(b.fd[s.Ino], backlog); err != nil {
			return fmt.Errorf("unix socket:[%d]: listen on %q (backlog %d): %w", s.Ino, s.Name, backlog, err)
		}
	}
	return nil
}

// inPair: made by socketpair or accept (its name comes with it).
func (b *builder) inPair(s *imagepb.UnixSocket) bool {
	if g, ok := b.ghosts[s.Ino]; ok && g.listener != nil {
		return true // accepted from its listener
	}
	for _, c := range b.conns {
		if c[1].Ino == s.Ino && b.viaAcc[c[0].Ino] {
			return true
		}
		if (c[0].Ino == s.Ino || c[1].Ino == s.Ino) && !b.viaAcc[c[0].Ino] {
			return true
		}
	}
	return false
}

// pairNamed: an end of a stream/seqpacket connection rebuilt with
// socketpair (no listener of the image gave it its name) that carries a
// path name: most likely accepted from a listener outside the image. It
// gets its name back without taking the path (bindScratch): nobody can
// connect to a connected socket anyway. (Abstract names are left unbound:
// the outside listener would hold them.)
func (b *builder) pairNamed(s *imagepb.UnixSocket) bool {
	if s.Type == unix.SOCK_DGRAM || s.Name[0] == '@' || s.State == tcpListen {
		return false
	}
	for _, c := range b.conns {
		if (c[0].Ino == s.Ino || c[1].Ino == s.Ino) && !b.viaAcc[c[0].Ino] {
			return true
		}
	}
	return false
}

// inConn: one end of a stream/seqpacket connection or of a dgram pair of
// the image (its queue comes from the other end).
func (b *builder) inConn(s *imagepb.UnixSocket) bool {
	for _, c := range b.conns {
		if c[0].Ino == s.Ino || c[1].Ino == s.Ino {
			return true
		}
	}
	return false
}

// connectToSock connects fd to the name of socket target of the image,
// resolved where that socket was bound.
func (b *builder) connectToSock(fd int, ino, target uint64) error {
	name := b.bound[target]
	return b.inOf(target).do(func() error { return connectTo(fd, ino, name) })
}

// connectTo connects fd to name (a path resolved where b.in says) without
// blocking (a full accept queue is an error, not a hang).
func (b *builder) connectTo(fd int, ino uint64, name string) error {
	return b.in.do(func() error { return connectTo(fd, ino, name) })
}

func connectTo(fd int, ino uint64, name string) error {
	if err := unix.SetNonblock(fd, true); err != nil {
		return err
	}
	err := unix.Connect(fd, sockaddr(name))
	if err == unix.EAGAIN || err == unix.EINPROGRESS {
		err = fmt.Errorf("the accept queue is full: %w", err)
	}
	if err != nil {
		return fmt.Errorf("unix socket:[%d]: connect to %q: %w", ino, name, err)
	}
	return unix.SetNonblock(fd, false)
}

// acceptConns rebuilds the accepted connections by connect + accept,
// before the waiting clients queue up again.
func (b *builder) acceptConns() error {
	for _, c := range b.conns {
		cl, srv := c[0], c[1]
		if !b.viaAcc[cl.Ino] {
			continue
		}
		l := b.listenerNamed(srv)
		if err := b.connectToSock(b.fd[cl.Ino], cl.Ino, l.Ino); err != nil {
			return err
		}
		nfd, _, err := unix.Accept4(b.fd[l.Ino], unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err != nil {
			return fmt.Errorf("unix socket:[%d]: accept on %q: %w", srv.Ino, l.Name, err)
		}
		if err := unix.SetNonblock(nfd, false); err != nil {
			unix.Close(nfd)
			return err
		}
		b.fd[srv.Ino] = nfd
		b.noteDefaults(srv)
	}
	return nil
}

// icons puts the waiting clients back in their listeners' accept queues,
// oldest first, with the data they had sent into the connection.
func (b *builder) icons() error {
	for _, l := range b.socks {
		if l.State != tcpListen {
			continue
		}
		gone := l.GoneIcons
		for _, ci := range l.Icons {
			if ci == 0 {
				if err := b.goneClient(l, gone[0]); err != nil {
					return err
				}
				gone = gone[1:]
				continue
			}
			c := b.byIno[ci]
			if c == nil || c.ListenerIno != l.Ino {
				continue // a client outside the image (--ext-unix-sk): dropped
			}
			if err := b.connectToSock(b.fd[c.Ino], c.Ino, l.Ino); err != nil {
				return err
			}
			if c.Embryo != nil {
				e := &imagepb.UnixSocket{Ino: c.Ino, Type: c.Type, Queue: c.Embryo.Queue, Creds: c.Embryo.Creds, Fds: c.Embryo.Fds}
				if err := refill(b.fd[c.Ino], e, nil, b.open); err != nil {
					return fmt.Errorf("unaccepted connection of %w", err)
				}
			}
		}
	}
	return nil
}

// dgramRefill refills the queues of dgram sockets that are not pair ends,
// before anyone connects (a connected socket receives only from its peer).
func (b *builder) dgramRefill() error {
	byName := map[string]int{}
	for _, s := range b.socks {
		if s.Type == unix.SOCK_DGRAM && s.Name != "" && !b.inPair(s) {
			byName[s.Name] = b.fd[s.Ino]
		}
	}
	for _, s := range b.socks {
		if s.Type != unix.SOCK_DGRAM || b.inPair(s) || len(s.Queue) == 0 || s.PeerGone {
			continue
		}
		to, ok := b.bound[s.Ino]
		if !ok {
			return fmt.Errorf("unix socket:[%d]: %d queued datagrams but no name to send them to", s.Ino, len(s.Queue))
		}
		for i := range s.Queue {
			from := ""
			if i < len(s.Senders) {
				from = s.Senders[i]
			}
			fd, ok := byName[from]
			if !ok || from == "" {
				var err error
				if fd, err = b.tempSender(from); err != nil {
					return err
				}
				byName[from] = fd
			}
			raiseSndbuf(fd, len(s.Queue[i]), 1)
			if err := sendElem(fd, s, i, sockaddr(to), b.open, b.inOf(s.Ino)); err != nil {
				return err
			}
		}
	}
	return nil
}

// tempSender is a temporary dgram socket bound to name when that is an
// abstract name nobody holds, else unbound.
func (b *builder) tempSender(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("unix: temporary dgram sender: %w", err)
	}
	b.temps = append(b.temps, fd)
	if name != "" && name[0] == '@' {
		_ = unix.Bind(fd, sockaddr(name)) // best effort: else unbound
	}
	return fd, nil
}

// connectAll connects the dgram sockets to their peer's name and the
// sockets with an external peer to its name.
func (b *builder) connectAll() error {
	for _, s := range b.socks {
		if s.External {
			if err := b.connectTo(b.fd[s.Ino], s.Ino, s.PeerName); err != nil {
				return fmt.Errorf("external peer: %w", err)
			}
			continue
		}
		if b.inConn(s) || s.PeerIno == 0 || s.Type != unix.SOCK_DGRAM {
			continue // connections and pairs were made above
		}
		name, ok := b.bound[s.PeerIno]
		if !ok {
			return fmt.Errorf("unix socket:[%d]: its peer socket:[%d] has no name to connect to", s.Ino, s.PeerIno)
		}
		if err := b.inOf(s.PeerIno).do(func() error { return unix.Connect(b.fd[s.Ino], sockaddr(name)) }); err != nil {
			return fmt.Errorf("unix socket:[%d]: connect to %q: %w", s.Ino, name, err)
		}
	}
	return nil
}

// streamRefill refills the queues of connected pairs from the other end.
func (b *builder) streamRefill() error {
	for _, s := range b.socks {
		if s.External {
			if len(s.Queue) > 0 {
				return fmt.Errorf("unix socket:[%d]: %d queued elements from an external peer", s.Ino, len(s.Queue))
			}
			continue
		}
		if !b.inConn(s) {
			continue
		}
		if s.Rcvbuf != 0 {
			if err := setBuf(b.fd[s.Ino], s.Ino, "SO_RCVBUF", unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, s.Rcvbuf, b.lim.rmem); err != nil {
				return err
			}
		}
		if err := refill(b.fd[s.PeerIno], s, nil, b.open); err != nil {
			return err
		}
	}
	return nil
}

// finish sets the buffer sizes, the SO_PASS* options and the other
// socket-level options (after the refill: they change what the kernel
// attaches to the refilled messages or allows in them, a filter would
// drop them, a send timeout would cut a refill short), then shutdown.
func (b *builder) finish() error {
	for _, s := range b.socks {
		fd := b.fd[s.Ino]
		snd := s.Sndbuf
		if snd == 0 {
			snd = b.defSnd[s.Ino]
		}
		if err := setBuf(fd, s.Ino, "SO_SNDBUF", unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, snd, b.lim.wmem); err != nil {
			return err
		}
		if err := setBuf(fd, s.Ino, "SO_RCVBUF", unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, s.Rcvbuf, b.lim.rmem); err != nil {
			return err
		}
		if s.Passcred {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
				return fmt.Errorf("unix socket:[%d]: set SO_PASSCRED: %w", s.Ino, err)
			}
		}
		if err := setPassOptions(fd, s); err != nil {
			return err
		}
		if err := applyGenericOptions(fd, s); err != nil {
			return err
		}
	}
	for _, s := range b.socks {
		if s.Shutdown == 0 || s.State == tcpListen || s.PeerGone {
			// (a closed peer shuts its other end down by itself)
			continue
		}
		// sk_shutdown bits (RCV=1, SEND=2) are shutdown(2)'s how + 1.
		if err := unix.Shutdown(b.fd[s.Ino], int(s.Shutdown)-1); err != nil && !(s.Type == unix.SOCK_DGRAM || errors.Is(err, unix.ENOTCONN)) {
			return fmt.Errorf("unix socket:[%d]: shutdown %d: %w", s.Ino, s.Shutdown, err)
		}
	}
	return nil
}

// setPassOptions sets SO_PASSSEC and SO_PASSPIDFD, clears SO_PASSRIGHTS,
// as recorded.
func setPassOptions(fd int, s *imagepb.UnixSocket) error {
	for _, o := range []struct {
		on   bool
		name string
		opt  int
		v    int
	}{{s.Passsec, "SO_PASSSEC", unix.SO_PASSSEC, 1}, {s.Passpidfd, "SO_PASSPIDFD", unix.SO_PASSPIDFD, 1}, {s.NoPassrights, "SO_PASSRIGHTS", unix.SO_PASSRIGHTS, 0}} {
		if !o.on {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.opt, o.v); err != nil {
			return fmt.Errorf("unix socket:[%d]: set %s=%d: %w", s.Ino, o.name, o.v, err)
		}
	}
	return nil
}

// cleanup undoes a failed Build.
func (b *builder) cleanup() {
	for _, fd := range b.fd {
		unix.Close(fd)
	}
	b.fd = nil
	for _, g := range b.ghosts {
		if g.fd >= 0 {
			unix.Close(g.fd)
		}
	}
	b.ghosts = nil
	for _, p := range b.created {
		b.in.do(func() error { return os.Remove(p) })
	}
}

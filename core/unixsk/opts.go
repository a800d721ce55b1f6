package unixsk

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/internal/sockcheck"
	"github.com/ctr-cr/ctr-cr/internal/sockopt"
)

// unixInts are the integer socket-level options the image carries for a
// unix socket (UnixSocket.opts), in the order they are set again: those
// of every family (internal/sockopt.Generic; SO_PEEK_OFF is read before
// the dump moves it to peek the queue, and refused on dgram/seqpacket
// sockets by peekQueue) and SO_BUF_LOCK last, after the buffer sizes
// whose setting also sets its bits.
var unixInts = func() []sockopt.Int {
	l := []sockopt.Int{
		{Name: "SO_REUSEADDR", Opt: unix.SO_REUSEADDR}, {Name: "SO_REUSEPORT", Opt: unix.SO_REUSEPORT},
		{Name: "SO_KEEPALIVE", Opt: unix.SO_KEEPALIVE}, {Name: "SO_BROADCAST", Opt: unix.SO_BROADCAST},
		{Name: "SO_OOBINLINE", Opt: unix.SO_OOBINLINE}, {Name: "SO_PRIORITY", Opt: unix.SO_PRIORITY},
		{Name: "SO_MARK", Opt: unix.SO_MARK},
	}
	l = append(l, sockopt.Generic...)
	return append(l, sockopt.Int{Name: "SO_BUF_LOCK", Opt: unix.SO_BUF_LOCK})
}()

// carriedOpts are the socket-level options the image carries:
// internal/sockcheck compares only the others with a fresh socket's.
var carriedOpts = func() map[string]bool {
	m := map[string]bool{"SO_PASSCRED": true, "SO_PASSSEC": true, "SO_PASSPIDFD": true, "SO_PASSRIGHTS": true,
		"SO_RCVTIMEO": true, "SO_SNDTIMEO": true, "SO_LINGER": true, "SO_BINDTODEVICE": true, "SO_ATTACH_FILTER": true, "SO_LOCK_FILTER": true}
	for _, o := range unixInts {
		m[o.Name] = true
	}
	return m
}()

// dumpGenericOptions records in s the socket-level options of fd (a unix
// socket of type s.Type) that read otherwise than on a fresh socket of
// its type, and refuses, naming it, one the image cannot carry: an eBPF
// filter (SO_ATTACH_BPF), SO_TIMESTAMPING with OPT_ID or BIND_PHC, and
// whatever else internal/sockcheck finds away from its default (SO_TXTIME,
// SO_MAX_PACING_RATE).
func dumpGenericOptions(fd int, s *imagepb.UnixSocket) error {
	ref, err := unix.Socket(unix.AF_UNIX, int(s.Type)|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("unix socket:[%d]: reference socket: %w", s.Ino, err)
	}
	defer unix.Close(ref)
	for _, o := range unixInts {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, o.Opt)
		if err != nil {
			continue // not in this kernel (or not for unix): it cannot differ from a fresh socket's
		}
		if def, err := unix.GetsockoptInt(ref, unix.SOL_SOCKET, o.Opt); err == nil && v == def {
			continue
		}
		if o.Opt == unix.SO_TIMESTAMPING {
			if why := sockopt.TimestampingRefusal(v); why != "" {
				return unsupported(s.Ino, "%s", why)
			}
		}
		s.Opts = append(s.Opts, &imagepb.InetOpt{Level: unix.SOL_SOCKET, Name: int32(o.Opt), Value: int32(v)})
	}
	if s.RcvtimeoUs, err = sockopt.TimeoutUs(fd, unix.SO_RCVTIMEO); err != nil {
		return fmt.Errorf("unix socket:[%d]: getsockopt SO_RCVTIMEO: %w", s.Ino, err)
	}
	if s.SndtimeoUs, err = sockopt.TimeoutUs(fd, unix.SO_SNDTIMEO); err != nil {
		return fmt.Errorf("unix socket:[%d]: getsockopt SO_SNDTIMEO: %w", s.Ino, err)
	}
	l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER)
	if err != nil {
		return fmt.Errorf("unix socket:[%d]: getsockopt SO_LINGER: %w", s.Ino, err)
	}
	s.LingerOn, s.LingerSecs = l.Onoff != 0, l.Linger
	if s.BindDev, err = unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); err != nil {
		return fmt.Errorf("unix socket:[%d]: getsockopt SO_BINDTODEVICE: %w", s.Ino, err)
	}
	if s.Filter, err = sockopt.GetFilter(fd); err != nil {
		if err == unix.EACCES {
			return unsupported(s.Ino, "eBPF socket filter (SO_ATTACH_BPF)")
		}
		return fmt.Errorf("unix socket:[%d]: getsockopt SO_GET_FILTER: %w", s.Ino, err)
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_LOCK_FILTER); err == nil {
		s.FilterLocked = v != 0
	}
	if what := sockcheck.NonDefault(fd, ref, carriedOpts); what != "" {
		return unsupported(s.Ino, "%s is not kept by the image", what)
	}
	return nil
}

// validateOpts checks the options of a (maybe hostile) image: only
// options of unixInts, sane timeouts, linger and device name.
func validateOpts(s *imagepb.UnixSocket) error {
	for _, o := range s.Opts {
		if o.Level != unix.SOL_SOCKET || intOpt(int(o.Name)) == nil {
			return fmt.Errorf("unix socket:[%d]: option level %d, %d is not one the image may carry", s.Ino, o.Level, o.Name)
		}
	}
	if s.RcvtimeoUs < 0 || s.SndtimeoUs < 0 || s.LingerSecs < 0 {
		return fmt.Errorf("unix socket:[%d]: negative timeout (%dus, %dus) or linger (%ds)", s.Ino, s.RcvtimeoUs, s.SndtimeoUs, s.LingerSecs)
	}
	if len(s.BindDev) >= unix.IFNAMSIZ {
		return fmt.Errorf("unix socket:[%d]: SO_BINDTODEVICE name of %d bytes", s.Ino, len(s.BindDev))
	}
	return nil
}

func intOpt(opt int) *sockopt.Int {
	for i := range unixInts {
		if unixInts[i].Opt == opt {
			return &unixInts[i]
		}
	}
	return nil
}

// applyGenericOptions sets on fd, a rebuilt unix socket whose queue is
// refilled and whose buffer sizes are set, the options dumpGenericOptions
// recorded: every option of unixInts is made to read what it read at dump
// time (the recorded value, else a fresh socket's), then the timeouts
// and SO_LINGER, the filter and its lock last. A timeout that does not
// read back as recorded (a kernel with another HZ) is an error.
func applyGenericOptions(fd int, s *imagepb.UnixSocket) error {
	ref, err := unix.Socket(unix.AF_UNIX, int(s.Type)|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("unix socket:[%d]: reference socket: %w", s.Ino, err)
	}
	defer unix.Close(ref)
	if s.BindDev != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, s.BindDev); err != nil {
			return fmt.Errorf("unix socket:[%d]: setsockopt SO_BINDTODEVICE %q: %w", s.Ino, s.BindDev, err)
		}
	}
	want := map[int32]int32{}
	for _, o := range s.Opts {
		want[o.Name] = o.Value
	}
	for _, o := range unixInts {
		cur, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, o.Opt)
		w, recorded := want[int32(o.Opt)]
		if !recorded {
			def, derr := unix.GetsockoptInt(ref, unix.SOL_SOCKET, o.Opt)
			if err != nil || derr != nil || cur == def {
				continue
			}
			w = int32(def)
		}
		if err != nil {
			return fmt.Errorf("unix socket:[%d]: getsockopt %s: %w", s.Ino, o.Name, err)
		}
		if cur == int(w) {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.Opt, int(w)); err != nil {
			return fmt.Errorf("unix socket:[%d]: setsockopt %s %d: %w", s.Ino, o.Name, w, err)
		}
	}
	if err := setTimeouts(fd, s); err != nil {
		return err
	}
	if s.LingerOn || s.LingerSecs != 0 {
		// on first (it sets the seconds), then off when it was off
		for _, on := range []bool{true, s.LingerOn} {
			l := unix.Linger{Onoff: b2i(on), Linger: s.LingerSecs}
			if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &l); err != nil {
				return fmt.Errorf("unix socket:[%d]: setsockopt SO_LINGER %+v: %w", s.Ino, l, err)
			}
		}
	}
	if err := sockopt.SetFilter(fd, s.Filter, s.FilterLocked); err != nil {
		return fmt.Errorf("unix socket:[%d]: %w", s.Ino, err)
	}
	return nil
}

// setTimeouts sets SO_RCVTIMEO and SO_SNDTIMEO and checks they read back
// as recorded.
func setTimeouts(fd int, s *imagepb.UnixSocket) error {
	for _, t := range []struct {
		name string
		opt  int
		us   int64
	}{{"SO_RCVTIMEO", unix.SO_RCVTIMEO, s.RcvtimeoUs}, {"SO_SNDTIMEO", unix.SO_SNDTIMEO, s.SndtimeoUs}} {
		if t.us == 0 {
			continue
		}
		if err := sockopt.SetTimeoutUs(fd, t.opt, t.us); err != nil {
			return fmt.Errorf("unix socket:[%d]: setsockopt %s %dus: %w", s.Ino, t.name, t.us, err)
		}
		if got, err := sockopt.TimeoutUs(fd, t.opt); err != nil || got != t.us {
			return fmt.Errorf("unix socket:[%d]: %s reads %dus after setting %dus (%v): this kernel keeps it otherwise", s.Ino, t.name, got, t.us, err)
		}
	}
	return nil
}

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

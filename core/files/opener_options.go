package files

import (
	"iter"
	"maps"
)

// OpenerOption configures an Opener at NewOpener.
type OpenerOption func(*Opener)

// WithTerminal gives the restorer's terminal fd that replaces a shell job's
// terminal (--shell-job); without it (or with -1) an image that needs one
// is refused (HasTerminal).
func WithTerminal(fd int) OpenerOption { return func(o *Opener) { o.terminal = fd } }

// WithInherit gives fds of ours that replace files of the image whose other
// side is outside it, by CRIU's key (--inherit-fd fd[N]:pipe:[INO]);
// Check refuses an external file without one.
func WithInherit(fds map[string]int) OpenerOption { return func(o *Opener) { o.inherit = fds } }

// WithPids gives, for pidfds and file owners, pidOf (a pid of the image to
// the restored process in our pid namespace, once it exists) and deadPidfd
// (a pidfd of a reaped process that ended with wait status, for pidfds of
// exited processes). Without them such files cannot be opened.
func WithPids(pidOf func(pid int32) (int, bool), deadPidfd func(flags int, status int32, known bool) (int, error)) OpenerOption {
	return func(o *Opener) { o.pidOf, o.deadPidfd = pidOf, deadPidfd }
}

// Object returns the memory object (memfd or shared anonymous memory) made
// for file id, if one is.
func (o *Opener) Object(id uint32) (int, bool) {
	fd, ok := o.objects[id]
	return fd, ok
}

// AddObject records fd, an fd of ours, as the memory object of file id:
// mappings and fds of the entry use it; Finish closes it.
func (o *Opener) AddObject(id uint32, fd int) { o.objects[id] = fd }

// Objects yields every memory object made, by file id.
func (o *Opener) Objects() iter.Seq2[uint32, int] { return maps.All(o.objects) }

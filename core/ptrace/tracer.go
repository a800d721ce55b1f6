package ptrace

import "runtime"

// Tracer is a goroutine locked to its own OS thread that performs ptrace
// requests for the tasks it seized: the kernel accepts requests only from the
// attaching thread. Several tracers let the work on independent processes
// run in parallel. A tracer must not be stopped while tracees are attached
// to it (its thread would exit and detach them).
type Tracer struct {
	work chan func()
}

// NewTracer starts a tracer thread.
func NewTracer() *Tracer {
	t := &Tracer{work: make(chan func())}
	go func() {
		runtime.LockOSThread()
		// The thread is never unlocked: when Stop ends this goroutine, Go
		// ends the thread, which is what we want once nothing is attached.
		for f := range t.work {
			f()
		}
	}()
	return t
}

// Do runs f on the tracer thread and waits for it.
func (t *Tracer) Do(f func()) {
	done := make(chan struct{})
	t.work <- func() { f(); close(done) }
	<-done
}

// Stop ends the tracer once its tracees are detached or dead.
func (t *Tracer) Stop() { close(t.work) }

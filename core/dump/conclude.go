package dump

import (
	"errors"
	"fmt"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/fault"
)

// treeEnd is what ends a dump once the tree is seized and the image
// created: the steps of dumper that touch the tree and the image. dumper
// implements it; conclude's test fakes it, so that the order the failure
// rules want is checked without a tree.
type treeEnd interface {
	run() error     // capture everything; without LeaveRunning, write the image too
	write() error   // write the captured image (LeaveRunning)
	abortImage()    // remove the partial image
	release() error // the tree runs on as before the dump
	kill() error    // the tree ends; the image is complete
}

// abortImage removes the partial image.
func (d *dumper) abortImage() { d.w.Abort() }

// conclude runs the capture and ends the dump. A failure before the image
// is complete removes the partial image and releases the tree, which runs
// on as before (the error names a failed release too); nothing is killed.
// With LeaveRunning the tree is released as soon as everything is
// captured, before the image is written. Otherwise opts.Commit runs once
// the image is written and the tree is killed only after it.
func conclude(e treeEnd, opts Options, st *Stats, t0, tFrozen time.Time) (*Stats, error) {
	err := e.run()
	if err != nil {
		e.abortImage()
		if rerr := e.release(); rerr != nil {
			err = fmt.Errorf("%w (and releasing the processes: %v)", err, rerr)
		}
		return nil, err
	}
	tr := time.Now()
	if opts.LeaveRunning {
		// Everything is captured: the tree runs again before the image
		// files are written, which takes that time off its frozen time. A
		// failed write then fails the dump with the tree running, as the
		// rule for a failed dump wants.
		fault.Point("dump:before-release")
		err = e.release()
		st.ReleaseMs = ms(time.Since(tr))
		st.FrozenMs = ms(time.Since(tFrozen))
		if werr := e.write(); werr != nil {
			e.abortImage()
			return nil, errors.Join(werr, err)
		}
		if opts.Commit != nil {
			if cerr := opts.Commit(); cerr != nil {
				e.abortImage()
				return nil, errors.Join(cerr, err)
			}
		}
		st.TotalMs = ms(time.Since(t0))
		return st, err
	}
	if opts.Commit != nil {
		if err := opts.Commit(); err != nil {
			e.abortImage()
			if rerr := e.release(); rerr != nil {
				err = fmt.Errorf("%w (and releasing the processes: %v)", err, rerr)
			}
			return nil, err
		}
		tr = time.Now()
	}
	// the image is complete and on disk (Finish synced it, Commit moved
	// it into place): a crash from here on leaves a restorable image
	fault.Point("dump:before-kill")
	trace("image finished (synced), committed")
	err = e.kill()
	trace("killed")
	st.ReleaseMs = ms(time.Since(tr))
	st.FrozenMs = ms(time.Since(tFrozen))
	st.TotalMs = ms(time.Since(t0))
	return st, err
}

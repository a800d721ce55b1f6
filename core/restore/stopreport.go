package restore

import (
	"encoding/binary"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// A stopped task is put back in its group stop at the end of its own
// finishTask, before its parent's (children finish first): the group stop
// then tells the parent (a stop report for wait, a SIGCHLD), and the
// parent, still in the restorer's hands, is made to look as in the dump:
// the report collected again when the parent had collected it
// (stop_report_taken), and the SIGCHLD taken out of its queue when none
// was pending in the dump.

// stopEarly detaches a stopped task into its group stop (finishTask's
// last step); detach then skips it.
func (r *restorer) stopEarly() error {
	if !r.pr.pst.Stopped {
		return nil
	}
	if err := r.detach(); err != nil {
		return err
	}
	r.detached = true
	return nil
}

// settleStoppedChildren runs in the parent's finishTask, while its control
// area exists: for each stopped child, wait until the parent has the stop
// report, collect it when the dump says it was collected, and drop the
// SIGCHLD the stop sent when the dump had none pending.
func (r *restorer) settleStoppedChildren() error {
	kids := false
	for _, c := range r.tree.tasks {
		if c.parent != r || !c.pr.pst.Stopped || !c.detached {
			continue
		}
		kids = true
		if err := r.awaitStopReport(c); err != nil {
			return fmt.Errorf("stopped child %d: %w", c.pr.pst.Pid, err)
		}
		if c.pr.pst.StopReportTaken {
			if _, err := r.waitidChild(c, unix.WSTOPPED|unix.WNOHANG); err != nil {
				return fmt.Errorf("stopped child %d: collect the stop report: %w", c.pr.pst.Pid, err)
			}
		}
	}
	if !kids || r.sigchldInImage() {
		return nil
	}
	return r.drainSigchld()
}

// awaitStopReport polls (injected waitid with WNOWAIT) until the child's
// group stop is complete and reported to this parent.
func (r *restorer) awaitStopReport(c *restorer) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, err := r.waitidChild(c, unix.WSTOPPED|unix.WNOHANG|unix.WNOWAIT)
		if err != nil {
			return err
		}
		if got {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no stop report after 2 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// waitidChild injects waitid(P_PID, child, options) into the task and
// reports whether it returned a report (si_pid set).
func (r *restorer) waitidChild(c *restorer, options uint64) (bool, error) {
	addr, err := r.put(0, make([]byte, 128))
	if err != nil {
		return false, err
	}
	if _, err := r.call(0, "waitid(stopped child)", unix.SYS_WAITID, unix.P_PID, uint64(c.nsPid), addr, options, 0); err != nil {
		return false, err
	}
	si := make([]byte, 20)
	if err := r.mem.ReadAt(si, addr); err != nil {
		return false, err
	}
	return binary.LittleEndian.Uint32(si[16:]) != 0, nil
}

// sigchldInImage reports whether the task had a SIGCHLD pending in the
// dump (then a new one merges into it: nothing to take out).
func (r *restorer) sigchldInImage() bool {
	for _, s := range r.pr.core.SharedPending {
		if len(s.Raw) >= 4 && binary.LittleEndian.Uint32(s.Raw) == uint32(unix.SIGCHLD) {
			return true
		}
	}
	return false
}

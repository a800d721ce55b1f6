package restore

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/files"
)

// fakeAttempt is one try of a restore that fails with err (nil: succeeds);
// its steps go to the log shared by the tries.
type fakeAttempt struct {
	n   int
	err error
	log *[]string
}

func (a *fakeAttempt) restore() error {
	*a.log = append(*a.log, fmt.Sprintf("restore %d", a.n))
	return a.err
}

func (a *fakeAttempt) abort() { *a.log = append(*a.log, fmt.Sprintf("abort %d", a.n)) }

// retryRun runs restoreRetrying over tries failing with errs in turn (then
// succeeding) and returns its error and the log of steps, "again" for
// each call of again (which fails with againErr).
func retryRun(errs []error, adopt bool, againErr error) (error, []string) {
	var log []string
	n := 0
	next := func() attempt {
		a := &fakeAttempt{n: n + 1, log: &log}
		if n < len(errs) {
			a.err = errs[n]
		}
		n++
		return a
	}
	err := restoreRetrying(next, adopt, func() error {
		log = append(log, "again")
		return againErr
	})
	return err, log
}

// TestRestoreRetryingAbortsEveryFailedTry: each failed try is aborted
// before the restore gives up or starts over; only a lost pid race starts
// over, at most maxAttempts tries, never with an adopted root, and not when
// the pids stay taken; the error is the last try's.
func TestRestoreRetryingAbortsEveryFailedTry(t *testing.T) {
	race := fmt.Errorf("pid 42: %w", errPidRace)
	other := errors.New("pid 42: mmap: ENOMEM")
	taken := errors.New("pid 42 is in use")
	races := func(n int) []error {
		var e []error
		for range n {
			e = append(e, race)
		}
		return e
	}
	for _, c := range []struct {
		name     string
		errs     []error
		adopt    bool
		againErr error
		wantErr  error
		wantLog  []string
	}{
		{name: "success", wantLog: []string{"restore 1"}},
		{name: "failure", errs: []error{other}, wantErr: other,
			wantLog: []string{"restore 1", "abort 1"}},
		{name: "race then success", errs: races(1),
			wantLog: []string{"restore 1", "abort 1", "again", "restore 2"}},
		{name: "race then failure", errs: []error{race, other}, wantErr: other,
			wantLog: []string{"restore 1", "abort 1", "again", "restore 2", "abort 2"}},
		{name: "race with an adopted root", errs: races(1), adopt: true, wantErr: race,
			wantLog: []string{"restore 1", "abort 1"}},
		{name: "race, pids still taken", errs: races(1), againErr: taken, wantErr: race,
			wantLog: []string{"restore 1", "abort 1", "again"}},
		{name: "races to the limit", errs: races(maxAttempts + 1), wantErr: race,
			wantLog: []string{
				"restore 1", "abort 1", "again", "restore 2", "abort 2", "again",
				"restore 3", "abort 3", "again", "restore 4", "abort 4", "again",
				"restore 5", "abort 5"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err, log := retryRun(c.errs, c.adopt, c.againErr)
			if !slices.Equal(log, c.wantLog) {
				t.Errorf("steps %v, want %v", log, c.wantLog)
			}
			if err != c.wantErr {
				t.Errorf("error %v, want %v", err, c.wantErr)
			}
		})
	}
}

// startSleeper starts a child that sleeps until killed.
func startSleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Skipf("sleep: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// TestTreeAbortUndoesTheTry: a failed try's abort kills every task it
// created that has not exited and the stub's helper, reaps them (their
// pids are free for the next try), and closes what the opener opened; a
// task that exited already is left alone (its pid may be another's now).
func TestTreeAbortUndoesTheTry(t *testing.T) {
	created, helper, exited := startSleeper(t), startSleeper(t), startSleeper(t)
	opener, err := files.NewOpener(nil)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	opener.AddObject(1, fd)
	tr := &tree{
		opener: opener,
		stub:   &stub{pid: created.Process.Pid, helper: helper, pidfd: -1},
		tasks: []*restorer{
			{pid: created.Process.Pid},
			{pid: exited.Process.Pid, exited: true},
		},
	}
	tr.abort()
	for _, c := range []*exec.Cmd{created, helper} {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", c.Process.Pid)); err == nil {
			t.Errorf("pid %d still present after abort", c.Process.Pid)
		}
	}
	if err := unix.Kill(exited.Process.Pid, 0); err != nil {
		t.Errorf("the exited task (pid %d) was killed: %v", exited.Process.Pid, err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("fd %d the opener held is still open after abort (%v)", fd, err)
	}
}

package dump

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeEnd records the steps conclude takes, in order, and fails the ones
// named in fail.
type fakeEnd struct {
	steps []string
	fail  map[string]error
}

func (f *fakeEnd) step(name string) error {
	f.steps = append(f.steps, name)
	return f.fail[name]
}

func (f *fakeEnd) run() error     { return f.step("run") }
func (f *fakeEnd) write() error   { return f.step("write") }
func (f *fakeEnd) abortImage()    { f.step("abort") }
func (f *fakeEnd) release() error { return f.step("release") }
func (f *fakeEnd) kill() error    { return f.step("kill") }

var (
	errRun     = errors.New("capture failed")
	errWrite   = errors.New("write failed")
	errCommit  = errors.New("commit failed")
	errRelease = errors.New("release failed")
	errKill    = errors.New("kill failed")
)

// concludeCase is one run of conclude against fakeEnd.
type concludeCase struct {
	name         string
	leaveRunning bool
	commit       bool // opts.Commit set (recorded as the step "commit")
	fail         map[string]error
	wantSteps    []string
	wantErrs     []error // each must be in the error (errors.Is)
	wantText     string  // and this in its text
	wantStats    bool    // stats returned (the dump succeeded, maybe with a release error)
}

func (c concludeCase) run(t *testing.T) {
	f := &fakeEnd{fail: c.fail}
	var opts Options
	opts.LeaveRunning = c.leaveRunning
	if c.commit {
		opts.Commit = func() error { return f.step("commit") }
	}
	now := time.Now()
	st, err := conclude(f, opts, &Stats{}, now, now)
	if !slices.Equal(f.steps, c.wantSteps) {
		t.Errorf("steps %v, want %v", f.steps, c.wantSteps)
	}
	for _, want := range c.wantErrs {
		if !errors.Is(err, want) {
			t.Errorf("error %v does not wrap %v", err, want)
		}
	}
	if len(c.wantErrs) == 0 && err != nil {
		t.Errorf("error %v, want none", err)
	}
	if c.wantText != "" && (err == nil || !strings.Contains(err.Error(), c.wantText)) {
		t.Errorf("error %v, want it to say %q", err, c.wantText)
	}
	if (st != nil) != c.wantStats {
		t.Errorf("stats %v, want stats: %v", st, c.wantStats)
	}
}

// TestConcludeFailedDumpLeavesTreeRunning: whatever step of a dump fails
// before the image is complete, the partial image is removed and the tree
// released (it runs on as before), never killed; a failed release is named
// beside the first error, which the result still wraps.
func TestConcludeFailedDumpLeavesTreeRunning(t *testing.T) {
	for _, c := range []concludeCase{{
		name:      "capture fails",
		fail:      map[string]error{"run": errRun},
		wantSteps: []string{"run", "abort", "release"},
		wantErrs:  []error{errRun},
	}, {
		name:      "capture and release fail",
		fail:      map[string]error{"run": errRun, "release": errRelease},
		wantSteps: []string{"run", "abort", "release"},
		wantErrs:  []error{errRun},
		wantText:  "and releasing the processes: release failed",
	}, {
		name:      "commit fails",
		commit:    true,
		fail:      map[string]error{"commit": errCommit},
		wantSteps: []string{"run", "commit", "abort", "release"},
		wantErrs:  []error{errCommit},
	}, {
		name:         "leave running: capture fails",
		leaveRunning: true,
		commit:       true,
		fail:         map[string]error{"run": errRun},
		wantSteps:    []string{"run", "abort", "release"},
		wantErrs:     []error{errRun},
	}, {
		name:         "leave running: write fails after the release",
		leaveRunning: true,
		commit:       true,
		fail:         map[string]error{"write": errWrite},
		wantSteps:    []string{"run", "release", "write", "abort"},
		wantErrs:     []error{errWrite},
	}, {
		name:         "leave running: commit fails after the release",
		leaveRunning: true,
		commit:       true,
		fail:         map[string]error{"commit": errCommit, "release": errRelease},
		wantSteps:    []string{"run", "release", "write", "commit", "abort"},
		wantErrs:     []error{errCommit, errRelease},
	}} {
		t.Run(c.name, c.run)
	}
}

// TestConcludeSuccess: a dump that kills its tree commits the image first
// and kills only then, without releasing it; with LeaveRunning the tree is
// released before the image is written, then committed, and nothing is
// killed. A failed release or kill after a complete image is reported
// with the stats.
func TestConcludeSuccess(t *testing.T) {
	for _, c := range []concludeCase{{
		name:      "kill after commit",
		commit:    true,
		wantSteps: []string{"run", "commit", "kill"},
		wantStats: true,
	}, {
		name:      "kill without commit",
		wantSteps: []string{"run", "kill"},
		wantStats: true,
	}, {
		name:      "kill fails",
		commit:    true,
		fail:      map[string]error{"kill": errKill},
		wantSteps: []string{"run", "commit", "kill"},
		wantErrs:  []error{errKill},
		wantStats: true,
	}, {
		name:         "leave running",
		leaveRunning: true,
		commit:       true,
		wantSteps:    []string{"run", "release", "write", "commit"},
		wantStats:    true,
	}, {
		name:         "leave running: release fails, image kept",
		leaveRunning: true,
		fail:         map[string]error{"release": errRelease},
		wantSteps:    []string{"run", "release", "write"},
		wantErrs:     []error{errRelease},
		wantStats:    true,
	}} {
		t.Run(c.name, c.run)
	}
}

package container

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/nsdump/netdev"
)

// fakePart records its calls in a shared log ("capture a", "restore a",
// "undo a", ...) and fails where told.
type fakePart struct {
	n          string
	st         captureStage
	log        *[]string
	captureErr error
	validErr   error
	restoreErr error
	undo       bool  // restore returns an undo
	undoErr    error // ... which fails
}

func (p *fakePart) name() string        { return p.n }
func (p *fakePart) stage() captureStage { return p.st }

func (p *fakePart) capture(*captureEnv) error {
	*p.log = append(*p.log, "capture "+p.n)
	return p.captureErr
}

func (p *fakePart) validate(*State) error {
	*p.log = append(*p.log, "validate "+p.n)
	return p.validErr
}

func (p *fakePart) restore(*restoreEnv) (func() error, error) {
	*p.log = append(*p.log, "restore "+p.n)
	if p.restoreErr != nil {
		return nil, p.restoreErr
	}
	if !p.undo {
		return nil, nil
	}
	return func() error {
		*p.log = append(*p.log, "undo "+p.n)
		return p.undoErr
	}, nil
}

// fakeFinisher is a fakePart with a finish step.
type fakeFinisher struct {
	fakePart
	finishErr error
}

func (p *fakeFinisher) finish(*restoreEnv) error {
	*p.log = append(*p.log, "finish "+p.n)
	return p.finishErr
}

func checkLog(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("calls:\n got  %q\n want %q", got, want)
	}
}

func keys(m map[string]float64) []string {
	var ks []string
	for _, n := range []string{"a", "b", "c", "d"} {
		if _, ok := m[n]; ok {
			ks = append(ks, n)
		}
	}
	return ks
}

// TestCaptureParts_ByStageInOrder: each stage runs only its parts, in the
// table's order, and times each of them.
func TestCaptureParts_ByStageInOrder(t *testing.T) {
	var log []string
	parts := []part{
		&fakePart{n: "a", st: frozenRead, log: &log},
		&fakePart{n: "b", st: beforeFreeze, log: &log},
		&fakePart{n: "c", st: frozenWrite, log: &log},
		&fakePart{n: "d", st: frozenRead, log: &log},
	}
	times := map[string]float64{}
	for _, s := range []captureStage{beforeFreeze, frozenRead, frozenWrite} {
		if err := captureParts(&captureEnv{}, parts, s, times); err != nil {
			t.Fatal(err)
		}
	}
	checkLog(t, log, "capture b", "capture a", "capture d", "capture c")
	if got := keys(times); !reflect.DeepEqual(got, []string{"a", "b", "c", "d"}) {
		t.Errorf("timed parts %v", got)
	}
}

// TestCaptureParts_StopsAtError: the first failing capture stops the
// stage, and its error is returned as it is.
func TestCaptureParts_StopsAtError(t *testing.T) {
	var log []string
	bad := errors.New("ipc: no such thing")
	parts := []part{
		&fakePart{n: "a", st: frozenRead, log: &log},
		&fakePart{n: "b", st: frozenRead, log: &log, captureErr: bad},
		&fakePart{n: "c", st: frozenRead, log: &log},
	}
	err := captureParts(&captureEnv{}, parts, frozenRead, map[string]float64{})
	if err != bad {
		t.Fatalf("err = %v, want %v", err, bad)
	}
	checkLog(t, log, "capture a", "capture b")
}

// TestValidateParts: in order, the first error returned.
func TestValidateParts(t *testing.T) {
	var log []string
	bad := errors.New("bad uts")
	parts := []part{
		&fakePart{n: "a", log: &log},
		&fakePart{n: "b", log: &log, validErr: bad},
		&fakePart{n: "c", log: &log},
	}
	if err := validateParts(&State{}, parts); err != bad {
		t.Fatalf("err = %v, want %v", err, bad)
	}
	checkLog(t, log, "validate a", "validate b")
}

// TestRestoreParts_Order: every part in the table's order, each timed, and
// the undo returned on success takes them back last first.
func TestRestoreParts_Order(t *testing.T) {
	var log []string
	parts := []part{
		&fakePart{n: "a", log: &log, undo: true},
		&fakePart{n: "b", log: &log}, // nothing to undo
		&fakePart{n: "c", log: &log, undo: true},
	}
	times := map[string]float64{}
	undo, err := restoreParts(&restoreEnv{}, parts, times)
	if err != nil {
		t.Fatal(err)
	}
	checkLog(t, log, "restore a", "restore b", "restore c")
	if got := keys(times); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("timed parts %v", got)
	}
	log = nil
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	checkLog(t, log, "undo c", "undo a")
	log = nil
	if err := undo(); err != nil || len(log) != 0 {
		t.Errorf("second undo: %v, calls %q", err, log)
	}
}

// TestRestoreParts_RollbackOnFailure: a failing part stops the loop, the
// parts before it are undone last first, and the error is the part's, with
// the undo's failures joined.
func TestRestoreParts_RollbackOnFailure(t *testing.T) {
	var log []string
	bad := errors.New("mounts: apply failed")
	undoBad := errors.New("link gone")
	parts := []part{
		&fakePart{n: "a", log: &log, undo: true},
		&fakePart{n: "b", log: &log, undo: true, undoErr: undoBad},
		&fakePart{n: "c", log: &log, restoreErr: bad},
		&fakePart{n: "d", log: &log, undo: true},
	}
	undo, err := restoreParts(&restoreEnv{}, parts, map[string]float64{})
	if !errors.Is(err, bad) || !errors.Is(err, undoBad) {
		t.Fatalf("err = %v, want %v and %v", err, bad, undoBad)
	}
	if !strings.Contains(err.Error(), "undo: link gone") {
		t.Errorf("err = %q: the undo's failure not named", err)
	}
	if undo != nil {
		t.Error("an undo returned with the error")
	}
	checkLog(t, log, "restore a", "restore b", "restore c", "undo b", "undo a")
}

// TestFinishParts: only the parts with a finish step, in order; the first
// error stops them.
func TestFinishParts(t *testing.T) {
	var log []string
	bad := errors.New("shm_rmid_forced")
	parts := []part{
		&fakePart{n: "a", log: &log},
		&fakeFinisher{fakePart: fakePart{n: "b", log: &log}},
		&fakeFinisher{fakePart: fakePart{n: "c", log: &log}, finishErr: bad},
		&fakeFinisher{fakePart: fakePart{n: "d", log: &log}},
	}
	if err := finishParts(&restoreEnv{}, parts); err != bad {
		t.Fatalf("err = %v, want %v", err, bad)
	}
	checkLog(t, log, "finish b", "finish c")
}

// TestNsParts_Table pins the real table: the restore order, the capture
// stages (cgroup settings before the freeze, the tmpfs archives written
// after the stray scan) and IPC's finish step. Changing it changes what a
// restore does first; see nsParts.
func TestNsParts_Table(t *testing.T) {
	var names []string
	stages := map[string]captureStage{}
	for _, p := range nsParts {
		names = append(names, p.name())
		stages[p.name()] = p.stage()
	}
	if want := []string{"ipc", "uts", "net", "mounts", "cgroup"}; !reflect.DeepEqual(names, want) {
		t.Errorf("order %v, want %v", names, want)
	}
	want := map[string]captureStage{"cgroup": beforeFreeze, "ipc": frozenRead, "uts": frozenRead, "net": frozenRead, "mounts": frozenWrite}
	if !reflect.DeepEqual(stages, want) {
		t.Errorf("stages %v, want %v", stages, want)
	}
	for _, p := range nsParts {
		_, fin := p.(finisher)
		if fin != (p.name() == "ipc") {
			t.Errorf("%s: finisher %v", p.name(), fin)
		}
	}
}

// TestNsParts_NothingToRestore: a state without a part's state restores
// nothing (no namespace is opened: pid 0 has none) and has nothing to undo;
// nor does a network with runc's --empty-ns network.
func TestNsParts_NothingToRestore(t *testing.T) {
	r := &restoreEnv{state: &State{Cgroup: &CgroupState{}, Net: &netdev.State{}}, emptyNet: true}
	undo, err := restoreParts(r, nsParts, map[string]float64{})
	if err != nil {
		t.Fatal(err)
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	if err := finishParts(r, nsParts); err != nil {
		t.Fatal(err)
	}
}

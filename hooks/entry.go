package hooks

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// JournalName is the file in the bundle where `ctr-cr hook` records each
// lifecycle event it is called for (one JSON object per line).
const JournalName = "ctr-cr-hooks.log"

// Event is one line of the journal.
type Event struct {
	Phase  string    `json:"phase"`
	ID     string    `json:"id"`
	Pid    int       `json:"pid"`
	Status string    `json:"status"`
	Time   time.Time `json:"time"`
}

// Entry is `ctr-cr hook PHASE`: it reads the OCI state from r, checks it
// (a known phase, an id, a bundle that exists; a pid for every phase but
// poststop) and records the event in BUNDLE/ctr-cr-hooks.log, so the
// container's lifecycle as the runtime and ctr-cr saw it can be followed
// across checkpoints and restores. Any problem is a clear error (the caller
// exits non-zero).
func Entry(phase string, r io.Reader) error {
	known := false
	for _, p := range Phases {
		known = known || string(p) == phase
	}
	if !known {
		return fmt.Errorf("unknown hook phase %q (one of prestart, createRuntime, createContainer, startContainer, poststart, poststop)", phase)
	}
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return fmt.Errorf("hook %s: reading the state: %w", phase, err)
	}
	var st specs.State
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("hook %s: the state on stdin is not OCI state JSON: %w", phase, err)
	}
	if st.ID == "" || st.Bundle == "" {
		return fmt.Errorf("hook %s: the state names no container id or bundle", phase)
	}
	if st.Pid <= 0 && phase != string(Poststop) {
		return fmt.Errorf("hook %s: container %s: the state has no pid", phase, st.ID)
	}
	if fi, err := os.Stat(st.Bundle); err != nil {
		return fmt.Errorf("hook %s: container %s: bundle: %w", phase, st.ID, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("hook %s: container %s: bundle %s is not a directory", phase, st.ID, st.Bundle)
	}
	line, _ := json.Marshal(Event{Phase: phase, ID: st.ID, Pid: st.Pid, Status: string(st.Status), Time: time.Now().UTC()})
	f, err := os.OpenFile(filepath.Join(st.Bundle, JournalName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("hook %s: container %s: %w", phase, st.ID, err)
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("hook %s: container %s: %w", phase, st.ID, err)
	}
	return f.Close()
}

package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/cgroup"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// runcStateFile is the part of runc's state.json (libcontainer's State) that
// `runc state` derives the OCI state from.
type runcStateFile struct {
	ID      string    `json:"id"`
	Pid     int       `json:"init_process_pid"`
	Start   uint64    `json:"init_process_start"`
	Created time.Time `json:"created"`
	Config  struct {
		Labels []string `json:"labels"`
	} `json:"config"`
}

// crunStatusFile is the part of crun's status file that `crun state`
// derives the OCI state from.
type crunStatusFile struct {
	Pid     int       `json:"pid"`
	Start   uint64    `json:"process-start-time"`
	Bundle  string    `json:"bundle"`
	Created time.Time `json:"created"`
}

// runningFromDir reads the state of container id from the runtime's own
// files in its state directory instead of running `RUNTIME state` (a
// process start, 15-20 ms of a ~75 ms checkpoint). It answers only for a
// container it is sure is running, by the runtimes' own rule: the init is
// alive with the start time the runtime recorded, the exec fifo is gone
// (else: created) and its cgroup is thawed (else: paused, or being paused). Anything
// else (files missing or of another shape, another status) gives ok
// false, and the caller asks the runtime, which then also words the
// status or the error.
func (r *Runtime) runningFromDir(id string) (st *RuntimeState, ok bool) {
	if found, _ := r.lookDir(id); !found {
		return nil, false
	}
	dir := r.stateDir(id)
	var pid int
	var start uint64
	var bundle string
	var created time.Time
	switch r.Name {
	case "runc":
		var f runcStateFile
		if !readJSONFile(filepath.Join(dir, "state.json"), &f) || f.ID != id {
			return nil, false
		}
		for _, l := range f.Config.Labels {
			if b, ok := strings.CutPrefix(l, "bundle="); ok {
				bundle = b
			}
		}
		pid, start, created = f.Pid, f.Start, f.Created
	case "crun":
		var f crunStatusFile
		if !readJSONFile(filepath.Join(dir, "status"), &f) {
			return nil, false
		}
		pid, start, bundle, created = f.Pid, f.Start, f.Bundle, f.Created
	default:
		return nil, false
	}
	if pid <= 0 || start == 0 || !filepath.IsAbs(bundle) {
		return nil, false
	}
	ps, err := procfs.ReadStat(pid)
	if err != nil || ps.StartTime != start {
		return nil, false // stopped, or the pid is someone else's now
	}
	if _, err := os.Lstat(filepath.Join(dir, "exec.fifo")); !errors.Is(err, fs.ErrNotExist) {
		return nil, false // created (or cannot tell)
	}
	cg, err := cgroup.ForPid(pid)
	if err != nil {
		return nil, false
	}
	if thawed, err := cg.Thawed(); err != nil || !thawed {
		return nil, false // paused, or being paused (v1 FREEZING)
	}
	return &RuntimeState{
		State:   specs.State{Version: specs.Version, ID: id, Status: specs.StateRunning, Pid: pid, Bundle: bundle},
		Created: created,
	}, true
}

func readJSONFile(path string, v any) bool {
	b, err := os.ReadFile(path)
	return err == nil && json.Unmarshal(b, v) == nil
}

// pointBundle makes the runtime's state of container id name bundle as
// its bundle: the restore creates the container from a private bundle
// (privateBundle), and `RUNTIME state`, `runc exec` (which reads the
// bundle's config.json for the process to run) and the next checkpoint
// must see the user's. runc keeps it as the "bundle=" label of state.json,
// crun as "bundle" in its status file; both are rewritten through a
// temporary file renamed over the original, as the runtimes write them.
// What `exec` takes from the config is put back to user's too
// (userExecState).
func (r *Runtime) pointBundle(id, bundle string, user *specs.Spec, initFilter []byte) error {
	dir := r.stateDir(id)
	var name string
	var doc map[string]any
	switch r.Name {
	case "runc":
		name = "state.json"
	case "crun":
		name = "status"
	default:
		return fmt.Errorf("runtime %s: state file unknown", r.Name)
	}
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	switch r.Name {
	case "runc":
		cfg, _ := doc["config"].(map[string]any)
		labels, _ := cfg["labels"].([]any)
		found := false
		for i, l := range labels {
			if s, _ := l.(string); strings.HasPrefix(s, "bundle=") {
				labels[i], found = "bundle="+bundle, true
			}
		}
		if !found {
			return fmt.Errorf("state %s: no bundle label", path)
		}
	case "crun":
		if _, ok := doc["bundle"].(string); !ok {
			return fmt.Errorf("state %s: no bundle", path)
		}
		doc["bundle"] = bundle
	}
	if err := r.userExecState(id, doc, user, initFilter); err != nil {
		return err
	}
	return replaceJSON(path, doc)
}

// Package oprec keeps a record of what a running ctr-cr has done to the
// host that must not outlive it: a cgroup it froze, the nftables table
// locking a dump's TCP connections, TCP connections it put in repair mode,
// a partial image or staging directory, a container it created for a
// restore. Each item is written down before the act (a small JSON file
// under /run/ctr-cr/ops, one per ctr-cr process) and the file goes when the
// operation ends, whatever its outcome.
//
// A ctr-cr killed on the way (kill -9, the OOM killer, a panic) leaves its
// record behind. Sweep, run by `ctr-cr cleanup` and cheaply at the start
// of every dump, checkpoint and restore, finds the records whose process
// is gone (pid and start time, so that a reused pid is not taken for the
// owner) and undoes what they list (see undo.go).
//
// Only the process that called Begin writes its record; the Add functions
// are no-ops without Begin (library callers, unit tests).
package oprec

import (
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// Dir holds the records (a variable for tests). CTRCR_OPS_DIR replaces
// it, for tests only: a test's records then meet no other ctr-cr's sweep.
var Dir = "/run/ctr-cr/ops"

func init() {
	if d := os.Getenv("CTRCR_OPS_DIR"); d != "" {
		Dir = d
	}
}

// Record is what one ctr-cr process has done that a crash would leave.
type Record struct {
	Proc
	// PidNS is the inode of the writer's pid namespace: its pids (the
	// file name's, the targets') mean something only there, and a sweep
	// from another pid namespace (a ctr-cr run in a container, a migrate
	// destination in a pid namespace of its own) leaves it alone.
	PidNS uint64    `json:"pid_ns,omitempty"`
	Op    string    `json:"op"`
	Began time.Time `json:"began"`
	// Frozen are the freezer directories (v1 freezer or cgroup2) it froze.
	Frozen     []string    `json:"frozen,omitempty"`
	NetLocks   []NetLock   `json:"net_locks,omitempty"`
	Repairs    []Repair    `json:"repairs,omitempty"`
	Partials   []Partial   `json:"partials,omitempty"`
	Containers []Container `json:"containers,omitempty"`
	// Checkpointed are containers a checkpoint kills once their image is
	// in place, then deletes from the runtime.
	Checkpointed []Checkpointed `json:"checkpointed,omitempty"`
	// Injected are what injected calls put in live targets for the time
	// of a step (see Injected); an item goes once that is removed.
	Injected []Injected `json:"injected,omitempty"`
	// nextID numbers Injected items (this process's only)
	nextID uint64
}

// Checkpointed is a container whose checkpoint, without --leave-running,
// kills it once the image is in Image: if the runtime reports it stopped
// and Image holds the complete image of that checkpoint (ctr-cr.json's
// checkpointed time is Stamp), the checkpoint died between the kill and
// the runtime's delete, and cleanup deletes it as the checkpoint would
// have (a restore of the image then finds the id free).
type Checkpointed struct {
	Runtime string    `json:"runtime"` // program path
	Root    string    `json:"root,omitempty"`
	ID      string    `json:"id"`
	Image   string    `json:"image"`
	Stamp   time.Time `json:"stamp"`
}

// Proc names a process by pid and start time (clock ticks since boot,
// /proc/PID/stat field 22): a pid reused by another process does not match.
type Proc struct {
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// NetLock is an nftables lock table (core/netlock) installed in the network
// namespace Netns (its inode) for the connections of Target's tree. A
// complete image in Image whose inventory names Table owns the table
// (restore removes it) once Target is gone.
type NetLock struct {
	Table  string `json:"table"`
	Netns  uint64 `json:"netns"`
	Target Proc   `json:"target"`
	Image  string `json:"image"`
}

// Repair is a TCP connection put in repair mode: fd Fd of Target, the
// socket inode Ino.
type Repair struct {
	Target Proc   `json:"target"`
	Fd     int    `json:"fd"`
	Ino    uint64 `json:"ino"`
}

// Partial is an image being written. Staging: a directory of ctr-cr's own
// (a checkpoint's DIR.tmp-*, a restore's private bundle), removed whole.
// Otherwise a dump's -D directory: its image files are removed unless it
// holds a complete image (inventory.img); the directory itself only when
// the dump created it and it is empty then.
type Partial struct {
	Dir        string `json:"dir"`
	Staging    bool   `json:"staging,omitempty"`
	CreatedDir bool   `json:"created_dir,omitempty"`
}

// Container is a container a restore is creating: while the runtime
// reports it "created" from Bundle, it is not restored and is deleted.
type Container struct {
	Runtime string `json:"runtime"` // program path
	Root    string `json:"root,omitempty"`
	ID      string `json:"id"`
	Bundle  string `json:"bundle"`
}

var (
	mu  sync.Mutex
	cur *Record
)

// Self is the calling process.
func Self() (Proc, error) { return ProcOf(os.Getpid()) }

// ProcOf names the live process pid.
func ProcOf(pid int) (Proc, error) {
	st, err := procfs.ReadStat(pid)
	if err != nil {
		return Proc{}, err
	}
	return Proc{Pid: pid, Start: st.StartTime}, nil
}

// Alive reports whether p still runs (a zombie does not).
func (p Proc) Alive() bool {
	st, err := procfs.ReadStat(p.Pid)
	return err == nil && st.StartTime == p.Start && st.State != 'Z' && st.State != 'X'
}

func (p Proc) fileName() string {
	return fmt.Sprintf("%d-%d.json", p.Pid, p.Start)
}

// Begin starts this process's record of operation op. End removes it.
func Begin(op string) error {
	self, err := Self()
	if err != nil {
		return fmt.Errorf("operation record: %w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	cur = &Record{Proc: self, PidNS: ownPidNS(), Op: op, Began: time.Now().UTC()}
	if err := saveLocked(); err != nil {
		cur = nil // no record: the Add functions do nothing
		return err
	}
	return nil
}

// End removes this process's record: everything it listed is undone or
// handed over (an image owning its network lock). What injection put in a
// live target and did not take back (Injected items not forgotten: the
// step failed half-way, its injector broke) is taken back now, as a
// cleanup would (the operation has let its targets go); what even that
// cannot remove stays recorded, alone, for the sweep that follows this
// process's exit.
func End() {
	mu.Lock()
	var left []Injected
	if cur != nil {
		left = slices.Clone(cur.Injected)
	}
	mu.Unlock()
	var kept []Injected
	for _, in := range left {
		if !in.Target.Alive() {
			continue
		}
		if _, err := undoInjected(in); err != nil {
			kept = append(kept, in)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if cur == nil {
		return
	}
	if len(kept) > 0 {
		cur = &Record{Proc: cur.Proc, PidNS: cur.PidNS, Op: cur.Op, Began: cur.Began, Injected: kept}
		if saveLocked() == nil {
			cur = nil
			return
		}
	}
	os.Remove(filepath.Join(Dir, cur.fileName()))
	cur = nil
}

// add applies fn to the record and saves it; without Begin it does nothing.
func add(fn func(r *Record)) error {
	mu.Lock()
	defer mu.Unlock()
	if cur == nil {
		return nil
	}
	fn(cur)
	return saveLocked()
}

// AddFrozen records that the freezer directory dir is about to be frozen.
func AddFrozen(dir string) error {
	return add(func(r *Record) { r.Frozen = append(r.Frozen, dir) })
}

// AddNetLock records a lock table about to be installed and the
// connections about to be put in repair mode behind it (one write for
// all).
func AddNetLock(l NetLock, repairs []Repair) error {
	return add(func(r *Record) {
		r.NetLocks = append(r.NetLocks, l)
		r.Repairs = append(r.Repairs, repairs...)
	})
}

// AddPartial records a directory about to be written.
func AddPartial(p Partial) error {
	return add(func(r *Record) { r.Partials = append(r.Partials, p) })
}

// AddCheckpointed records a container about to be checkpointed and
// killed.
func AddCheckpointed(c Checkpointed) error {
	return add(func(r *Record) { r.Checkpointed = append(r.Checkpointed, c) })
}

// AddContainer records a container about to be created.
func AddContainer(c Container) error {
	return add(func(r *Record) { r.Containers = append(r.Containers, c) })
}

// saveLocked writes cur atomically (a temporary file renamed over it).
func saveLocked() error {
	if err := os.MkdirAll(Dir, 0o700); err != nil {
		return fmt.Errorf("operation record: %w", err)
	}
	b, err := json.Marshal(cur)
	if err != nil {
		return fmt.Errorf("operation record: %w", err)
	}
	p := filepath.Join(Dir, cur.fileName())
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("operation record: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("operation record: %w", err)
	}
	return nil
}

// Stale lists the records whose process is gone; a record that cannot be
// read is named in the error and skipped.
func Stale() ([]*Record, error) {
	ents, err := os.ReadDir(Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("operation records: %w", err)
	}
	var out []*Record
	var errs []error
	own := ownPidNS()
	for _, e := range ents {
		p, ok := parseName(e.Name())
		if !ok || p.Alive() {
			continue
		}
		r, err := read(filepath.Join(Dir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if r == nil {
			continue // removed by another cleaner meanwhile
		}
		if r.PidNS != 0 && r.PidNS != own {
			continue // another pid namespace's: its pids are not ours to judge
		}
		r.Proc = p // the name is authoritative
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// parseName reads "PID-START.json".
func parseName(name string) (Proc, bool) {
	base, ok := strings.CutSuffix(name, ".json")
	if !ok {
		return Proc{}, false
	}
	ps, ss, ok := strings.Cut(base, "-")
	if !ok {
		return Proc{}, false
	}
	pid, err1 := strconv.Atoi(ps)
	start, err2 := strconv.ParseUint(ss, 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 {
		return Proc{}, false
	}
	return Proc{Pid: pid, Start: start}, true
}

// read parses the record at path (nil when it is gone). A record that
// does not parse is reported, not guessed at: its file stays for a look.
func read(path string) (*Record, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("operation record %s: %w", path, err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("operation record %s: %w", path, err)
	}
	return &r, nil
}

// remove deletes r's file once it is undone.
func remove(r *Record) error {
	err := os.Remove(filepath.Join(Dir, r.fileName()))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// ownPidNS is the inode of this process's pid namespace (0 if unknown).
func ownPidNS() uint64 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return 0
	}
	return st.Ino
}

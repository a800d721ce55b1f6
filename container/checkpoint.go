package container

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/cgroup"
	"github.com/ctr-cr/ctr-cr/core/dump"
	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/imagesig"
	"github.com/ctr-cr/ctr-cr/internal/fault"
	"github.com/ctr-cr/ctr-cr/internal/oprec"
	"github.com/ctr-cr/ctr-cr/internal/timing"
	"github.com/ctr-cr/ctr-cr/internal/version"
	"github.com/ctr-cr/ctr-cr/mounts"
	"github.com/ctr-cr/ctr-cr/nsdump"
	"github.com/ctr-cr/ctr-cr/nsdump/netdev"
)

// Names of the files the container layer writes beside the core image.
const (
	SpecDumpName = "spec.dump"      // the bundle's config.json at checkpoint time
	MetadataName = "ctr-cr.json"    // Metadata
	StateName    = "container.json" // State
)

// State is what the container layer saves beside the core image: what a
// process-level dump does not hold (container.json).
type State struct {
	Cgroup *CgroupState `json:"cgroup,omitempty"`
	// UTS and IPC are the container's own namespaces (nil when it shares
	// ctr-cr's).
	UTS *nsdump.UTS `json:"uts,omitempty"`
	IPC *nsdump.IPC `json:"ipc,omitempty"`
	// Net is the container's own network namespace: links with their
	// ifindex (veth peers on the host side too), addresses, routes,
	// rules, sysctls.
	Net *netdev.State `json:"net,omitempty"`
	// Mounts is the container's mount tree (from its init's mountinfo);
	// TmpfsFiles maps the mount point of each tmpfs to the tar of its
	// contents beside this file.
	Mounts     *mounts.Tree      `json:"mounts,omitempty"`
	TmpfsFiles map[string]string `json:"tmpfs_files,omitempty"`
}

// CgroupState is the container's cgroup: where it was and its settings.
type CgroupState struct {
	Paths    cgroup.Paths     `json:"paths"`
	Settings *cgroup.Settings `json:"settings"`
}

// Metadata describes a container checkpoint (ctr-cr.json).
type Metadata struct {
	Format       int       `json:"format"` // 1
	ID           string    `json:"id"`
	Runtime      string    `json:"runtime"`
	RuntimeRoot  string    `json:"runtime_root,omitempty"`
	Bundle       string    `json:"bundle"`
	InitPid      int       `json:"init_pid"`
	Created      time.Time `json:"created,omitempty"` // the container's creation, from the runtime
	Checkpointed time.Time `json:"checkpointed"`
	ToolVersion  string    `json:"tool_version"`
	LeftRunning  bool      `json:"left_running"`
}

// CheckpointOptions control Checkpoint.
type CheckpointOptions struct {
	ID           string
	Runtime      *Runtime
	ImagePath    string // "": BUNDLE/checkpoint
	LeaveRunning bool
	Dump         dump.Options // engine options (TCPEstablished, Jobs, ...)
	// SignKey, when set, signs the image (image.sig, core/imagesig) in
	// its staging directory, before it takes its place and before the
	// container is killed.
	SignKey ed25519.PrivateKey
	// Platform holds what an OCI runtime's checkpoint under a container
	// platform asks for (ctr-cr as `runc`, platform.go); zero: the
	// command-line checkpoint of a container started by hand.
	Platform PlatformCheckpoint
	// Deliver, when set, is called once the image is complete in its
	// place, while the container is still frozen (a migration sends it
	// and has it restored on the other side there): only once it
	// succeeds is the container killed; an error fails the checkpoint
	// and the container runs on as before.
	Deliver func(dir string) error
}

// Checkpoint dumps the running container opts.ID into its image directory
// and returns the directory. Without LeaveRunning the container's processes
// are killed once the image is complete and the container is deleted from
// the runtime, as `runc checkpoint` does. The image is written into a fresh
// directory beside the image directory and takes its place, replacing a
// previous image there, only once complete and synced to disk, before any
// process is killed (see stagedImage). A failed checkpoint leaves the
// container running as it was (core/dump's rule) and the image directory
// as it was. Two checkpoints of one container, or into one image
// directory, at once: the second fails with ErrBusy. The calling goroutine
// must be locked to its OS thread.
func Checkpoint(ctx context.Context, opts CheckpointOptions) (string, *CheckpointStats, error) {
	unlock, err := lockContainer(opts.Runtime, opts.ID)
	if err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
	}
	defer unlock()
	// warm from the start, so that the dump's /proc/locks read, after the
	// freeze, finds the kernel's lock listing warm (files.WarmLocks); the
	// dump keeps it warm from its own start until its read is done
	unwarm := files.WarmLocks()
	defer unwarm()
	t0 := time.Now()
	cst := &CheckpointStats{}
	rt := opts.Runtime
	st, ok := rt.runningFromDir(opts.ID)
	cst.StateFrom = "state-dir"
	if !ok {
		cst.StateFrom = "runtime"
		st, err = rt.State(ctx, opts.ID)
	}
	cst.StateMs = ms(time.Since(t0))
	if err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
	}
	paused := st.Status == specs.ContainerState("paused") && opts.Platform.AcceptPaused
	if st.Status != specs.StateRunning && !paused {
		return "", nil, fmt.Errorf("checkpoint %s: status %q: %w", opts.ID, st.Status, ErrNotRunning)
	}
	if st.Pid <= 0 {
		return "", nil, fmt.Errorf("checkpoint %s: the runtime reports no init pid", opts.ID)
	}
	specBytes, err := os.ReadFile(filepath.Join(st.Bundle, "config.json"))
	if err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: bundle: %w", opts.ID, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(specBytes, &spec); err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %s/config.json: %w", opts.ID, st.Bundle, err)
	}
	dir, err := imageDir(opts.ImagePath, st.Bundle)
	if err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
	}
	if opts.Dump.ParentPath != "" && opts.SignKey != nil {
		return "", nil, fmt.Errorf("checkpoint %s: --sign-key with --parent-path: not supported (the signature would not cover the pages in the parent images)", opts.ID)
	}
	if err := checkParent(dir, opts.Dump.ParentPath, opts.ID); err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
	}
	stage, err := stageImage(dir)
	if err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
	}
	defer stage.done()
	if err := oprec.AddPartial(oprec.Partial{Dir: stage.tmp, Staging: true}); err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
	}
	meta := Metadata{
		Format: 1, ID: opts.ID, Runtime: rt.Name, RuntimeRoot: rt.Root, Bundle: st.Bundle,
		InitPid: st.Pid, Created: st.Created, ToolVersion: version.Version, LeftRunning: opts.LeaveRunning,
	}
	// The container's cgroup: frozen while its tree is seized. The parts
	// (nsParts) are captured in three stages around the freeze.
	cg, err := cgroup.ForPid(st.Pid)
	if err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
	}
	var state State
	pc := &captureEnv{pid: st.Pid, spec: &spec, dir: stage.tmp, cg: cg, emptyNet: opts.Platform.EmptyNet, state: &state}
	cst.NamespaceMs = map[string]float64{}
	if err := captureParts(pc, nsParts, beforeFreeze, cst.NamespaceMs); err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
	}
	if fd, err := cg.FreezerDir(); err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
	} else if err := oprec.AddFrozen(fd); err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
	}
	tf := time.Now()
	if err := cg.Freeze(ctx); err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
	}
	// on every path the freezer is left as found: thawed (a second thaw
	// is harmless), or frozen again for a paused container
	defer leaveFreezer(cg, paused)
	frozen := time.Now()
	cst.FreezingMs = ms(frozen.Sub(tf))
	// The stray scan (every process of the host, 2-8 ms on a busy host)
	// runs beside the namespace capture, which only reads; its answer is
	// waited for, and comes first, before anything is written.
	type strayScan struct {
		strays []string
		err    error
	}
	scan := make(chan strayScan, 1)
	go func() {
		s, err := strayProcesses(cg, st.Pid)
		scan <- strayScan{s, err}
	}()
	nsErr := captureParts(pc, nsParts, frozenRead, cst.NamespaceMs)
	sc := <-scan
	if sc.err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, sc.err)
	}
	if len(sc.strays) > 0 {
		return "", nil, fmt.Errorf("checkpoint %s: processes in the container's cgroup outside its init's tree would be lost (a `%s exec` session?): %s; end them or let them exit first", opts.ID, rt.Name, strings.Join(sc.strays, ", "))
	}
	if nsErr != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, nsErr)
	}
	tm := time.Now()
	cst.NamespacesMs = ms(tm.Sub(frozen))
	if err := captureParts(pc, nsParts, frozenWrite, cst.NamespaceMs); err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
	}
	cst.MountsMs = ms(time.Since(tm))
	fault.Point("checkpoint:frozen") // tmpfs tars written, cgroup frozen
	// the container layer's files first: the dump kills the tree only
	// once the whole image, these included, is on disk (Commit)
	meta.Checkpointed = time.Now().UTC()
	if err := writeContainerFiles(stage.tmp, specBytes, &state, &meta); err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
	}
	if !opts.LeaveRunning {
		// a crash between the kill and the runtime's delete leaves a
		// stopped container in the way of the image's restore
		if err := oprec.AddCheckpointed(oprec.Checkpointed{Runtime: rt.Bin, Root: rt.Root, ID: opts.ID, Image: dir, Stamp: meta.Checkpointed}); err != nil {
			return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
		}
	}
	dopts := opts.Dump
	dopts.LeaveRunning = opts.LeaveRunning
	// seized frozen, thawed once seized; when paused, frozen again before
	// a task can run: it stays paused
	dopts.Frozen, dopts.StayFrozen = true, paused
	dopts.Notify = &FreezerNotify{Cgroup: cg, Refreeze: paused}
	dopts.WaitKilled = true    // the runtime deletes the container (its cgroup) next
	dopts.OwnNamespaces = true // rebuilt by the runtime and this layer at restore
	// its stdio is then the console the runtime made, whose master the
	// console socket's receiver holds
	dopts.ExternalConsole = spec.Process != nil && spec.Process.Terminal
	dopts.NoExtPipes = true // a container restore cannot hand pipes in
	dopts.LayerFiles = layerFiles(&state)
	if opts.Platform.ExternalStdio {
		// ... except its stdio pipes to the platform's monitor, which the
		// runtime's restore is given again (descriptors.json)
		if dopts.ExtPipes, err = saveStdio(st.Pid, stage.tmp); err != nil {
			return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
		}
		dopts.LayerFiles = append(dopts.LayerFiles, StdioName)
	}
	// the image's disk writes start while the dump writes it; the commit
	// stops that and fsyncs
	stopWriteback := stage.startWriteback()
	defer stopWriteback()
	dopts.Commit = func() error {
		stopWriteback()
		if opts.SignKey != nil {
			if err := imagesig.Sign(stage.tmp, opts.SignKey); err != nil {
				return err
			}
		}
		if err := stage.commit(); err != nil {
			return err
		}
		if opts.Deliver != nil {
			return opts.Deliver(dir)
		}
		return nil
	}
	unwarm() // Dump warms from here on, while it needs it
	stats, err := dump.Dump(ctx, st.Pid, stage.tmp, dopts)
	if err != nil {
		return "", nil, fmt.Errorf("checkpoint %s: %w", opts.ID, err)
	}
	// the tree ran again (or died) when Dump returned
	cst.FrozenMs = ms(time.Since(frozen))
	cst.Dump = stats
	if !opts.LeaveRunning {
		fault.Point("checkpoint:killed") // image in place, container killed, not deleted
		td := time.Now()
		if err := rt.Delete(ctx, opts.ID); err != nil {
			return dir, cst, fmt.Errorf("checkpoint %s: the image is complete, but removing the container failed: %w", opts.ID, err)
		}
		cst.DeleteMs = ms(time.Since(td))
	}
	cst.TotalMs = ms(time.Since(t0))
	return dir, cst, nil
}

// imageDir is the absolute image directory of a checkpoint: imagePath, or
// BUNDLE/checkpoint by default; an existing symbolic link is followed, so
// that the image replaces the directory it names, not the link.
func imageDir(imagePath, bundle string) (string, error) {
	dir := imagePath
	if dir == "" {
		dir = filepath.Join(bundle, "checkpoint")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if p, err := filepath.EvalSymlinks(dir); err == nil {
		dir = p
	}
	return dir, nil
}

// layerFiles names the files writeContainerFiles and the mounts part wrote
// for state: the image's inventory lists them with their checksums
// (dump.Options.LayerFiles), so that a restore verifies them.
func layerFiles(state *State) []string {
	names := []string{SpecDumpName, StateName, MetadataName}
	for _, n := range state.TmpfsFiles {
		names = append(names, n)
	}
	return names
}

// writeContainerFiles writes spec.dump (config.json as checkpointed),
// container.json and ctr-cr.json into dir.
func writeContainerFiles(dir string, specBytes []byte, state *State, meta *Metadata) error {
	if err := writeFile(filepath.Join(dir, SpecDumpName), specBytes); err != nil {
		return err
	}
	sb, _ := json.MarshalIndent(state, "", "  ")
	if err := writeFile(filepath.Join(dir, StateName), append(sb, '\n')); err != nil {
		return err
	}
	mb, _ := json.MarshalIndent(meta, "", "  ")
	return writeFile(filepath.Join(dir, MetadataName), append(mb, '\n'))
}

// CheckpointStats are the phases of a container checkpoint (--print-stats).
// FrozenMs runs from the moment the cgroup is frozen until the tree runs
// again (--leave-running) or is killed: the namespace and mount capture
// happen frozen too, so it is longer than the process dump's own frozen_ms.
type CheckpointStats struct {
	StateMs      float64 `json:"state_ms"`    // RUNTIME state
	StateFrom    string  `json:"state_from"`  // "state-dir" (the runtime's files) or "runtime" (RUNTIME state)
	FreezingMs   float64 `json:"freezing_ms"` // cgroup freezer
	FrozenMs     float64 `json:"frozen_ms"`
	NamespacesMs float64 `json:"namespaces_ms"` // ipc, uts, net (and the wait for the stray scan)
	MountsMs     float64 `json:"mounts_ms"`     // mount tree and tmpfs contents
	// NamespaceMs is the capture of each part (nsParts) by name: cgroup
	// (before the freeze), ipc, uts, net, mounts.
	NamespaceMs map[string]float64 `json:"namespace_ms"`
	DeleteMs    float64            `json:"delete_ms"` // RUNTIME delete
	TotalMs     float64            `json:"total_ms"`
	Dump        *dump.Stats        `json:"dump"`
}

var ms = timing.Ms // the one definition: internal/timing

// writeFile writes b as the new file path (0600) of the staged image. It
// is not synced here: the stage's commit fsyncs every file of the image,
// these included, before the image takes its place and before the tree is
// killed (three fsyncs in a row here had cost 5-20 ms of frozen time).
func writeFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// joinedByPath reports whether the config makes the container join an
// existing namespace of kind (linux.namespaces[].path set).
func joinedByPath(spec *specs.Spec, kind specs.LinuxNamespaceType) bool {
	if spec == nil || spec.Linux == nil {
		return false
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == kind && ns.Path != "" {
			return true
		}
	}
	return false
}

// ownNamespace reports whether pid has a namespace of kind other than
// ctr-cr's (only a container's own namespaces are saved).
func ownNamespace(pid int, kind string) (bool, error) {
	theirs, err := os.Readlink(nsdump.NSPath(pid, kind))
	if err != nil {
		return false, err
	}
	ours, err := os.Readlink("/proc/self/ns/" + kind)
	if err != nil {
		return false, err
	}
	return theirs != ours, nil
}

func hasOpt(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

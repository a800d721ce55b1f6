package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/restore"
	"github.com/ctr-cr/ctr-cr/hooks"
	"github.com/ctr-cr/ctr-cr/internal/capnames"
	"github.com/ctr-cr/ctr-cr/internal/fault"
)

// RestoreOptions control Restore.
type RestoreOptions struct {
	Bundle    string
	ImagePath string   // "": BUNDLE/checkpoint
	ID        string   // "": the checkpointed container's id
	Runtime   *Runtime // nil: the image's runtime (ctr-cr.json), with RuntimeRoot
	// RuntimeRoot is the runtime's --root when Runtime is nil.
	RuntimeRoot string
	// ConsoleSocket is the unix socket the runtime sends the new
	// console's pty master to (required when config.json has
	// process.terminal, refused otherwise).
	ConsoleSocket string
	// Stats, when set, receives the restore's phase times.
	Stats *RestoreStats
	// Platform holds what a platform's restore asks for (ctr-cr as
	// `runc`); zero for a restore by hand.
	Platform PlatformRestore
}

// PlatformRestore is what a platform's restore asks beyond the defaults.
type PlatformRestore struct {
	// Inherit are fds of ours that replace the image's external pipes
	// (StdioInherit: our fds 0-2, which the platform's monitor gave).
	Inherit map[string]int
	// CreateArgs are more options for the runtime's create (--no-pivot).
	CreateArgs []string
	// TCPClose restores TCP connections as closed sockets (--tcp-close).
	TCPClose bool
	// EmptyNet leaves the new network namespace as the platform set it
	// up (runc's --empty-ns network).
	EmptyNet bool
	// LooseMountOrder accepts a config.json whose mounts a platform listed
	// in another order that makes the same tree (platformSpec).
	LooseMountOrder bool
	// StdioInherit sets Inherit from the image's descriptors.json (see
	// StdioInherit), read from the image as Restore validated it.
	StdioInherit bool
}

// RestoreStats are the phases of a container restore (--print-stats).
type RestoreStats struct {
	ValidateMs   float64            `json:"validate_ms"`   // image and config.json checks
	CreateMs     float64            `json:"create_ms"`     // RUNTIME create
	NamespacesMs float64            `json:"namespaces_ms"` // network lock, ipc, uts, links, mounts, cgroup
	NamespaceMs  map[string]float64 `json:"namespace_ms"`  // NamespacesMs by part (ipc, uts, net, mounts, cgroup)
	HooksMs      float64            `json:"hooks_ms"`      // creation hooks
	StartMs      float64            `json:"start_ms"`      // RUNTIME start
	TotalMs      float64            `json:"total_ms"`      // to the container running (poststart not counted)
	Restore      *restore.Stats     `json:"restore"`       // the process tree
}

// Restore brings the container checkpointed in the image back from its
// bundle and leaves it running under the runtime (runc state, ps, kill and
// delete work on it). It returns the container's id and its init's pid.
//
// The runtime builds the sandbox (`runc create`: namespaces, cgroup,
// rootfs mounts), from a config that differs from the bundle's only in
// what the restore needs (every capability, no no_new_privs, no seccomp,
// uid 0: the restored tasks get their own back from the image). Its init
// is then adopted as the root of the restored tree (core/restore
// Options.Adopt); the namespaces' state (IPC objects, hostname, links,
// mounts and tmpfs contents, cgroup settings) goes back in before the
// tasks run (lifecycle.Notify.BeforeTasksRun); finally the runtime's
// created→running step is done the way its init would have done it. A
// failed restore deletes the container.
func Restore(ctx context.Context, opts RestoreOptions) (string, int, error) {
	t0 := time.Now()
	rst := opts.Stats
	if rst == nil {
		rst = &RestoreStats{}
	}
	bundle, err := filepath.Abs(opts.Bundle)
	if err != nil {
		return "", 0, err
	}
	dir, err := imageDir(opts.ImagePath, bundle)
	if err != nil {
		return "", 0, err
	}
	// a checkpoint must not replace the image while it is read
	unlockImg, err := lockImageDir(dir)
	switch {
	case errors.Is(err, ErrBusy):
		return "", 0, fmt.Errorf("restore: %w", err)
	case err != nil:
		// no lock file beside a read-only image: nothing checkpoints there
		unlockImg = func() {}
	}
	defer unlockImg()
	if err := preDumpOnly(dir); err != nil {
		return "", 0, fmt.Errorf("restore: image %s: %w", dir, err)
	}
	// the one validation of the whole image, the container layer's files
	// included (their checksums in its inventory), before anything runs;
	// every reader below reads from it
	img, err := restore.Open(dir)
	if err != nil {
		return "", 0, fmt.Errorf("restore: %w", err) // naming the image and file
	}
	if opts.Platform.StdioInherit {
		if opts.Platform.Inherit, err = stdioInherit(img); err != nil {
			return "", 0, fmt.Errorf("restore: image %s: %w", dir, err)
		}
	}
	var meta Metadata
	if err := readLayerJSON(img, MetadataName, &meta); err != nil {
		return "", 0, fmt.Errorf("restore: image %s: %w", dir, err)
	}
	if err := meta.validate(); err != nil {
		return "", 0, fmt.Errorf("restore: image %s: %s: %w", dir, MetadataName, err)
	}
	var state State
	if err := readLayerJSON(img, StateName, &state); err != nil {
		return "", 0, fmt.Errorf("restore: image %s: %w", dir, err)
	}
	dumped, err := readLayer(img, SpecDumpName)
	if err != nil {
		return "", 0, fmt.Errorf("restore: image %s: %w", dir, err)
	}
	rt := opts.Runtime
	if rt == nil {
		// the runtime that ran the container at the checkpoint
		root := opts.RuntimeRoot
		if root == "" && meta.RuntimeRoot != "" {
			if err := trustedRuntimeRoot(meta.RuntimeRoot); err != nil {
				return "", 0, fmt.Errorf("restore: image %s: %s: runtime root %q (give --root to choose one): %w", dir, MetadataName, meta.RuntimeRoot, err)
			}
			root = meta.RuntimeRoot
		}
		if rt, err = NewRuntime(meta.Runtime, root); err != nil {
			return "", 0, fmt.Errorf("restore: image %s: %w", dir, err)
		}
	}
	cfgPath := filepath.Join(bundle, "config.json")
	orig, err := os.ReadFile(cfgPath)
	if err != nil {
		return "", 0, fmt.Errorf("restore: bundle: %w", err)
	}
	cmpDumped, cmpCurrent := dumped, orig
	if opts.Platform.LooseMountOrder {
		cmpDumped, cmpCurrent = platformSpecDumped(dumped), platformSpec(dumped, orig)
	}
	if err := CompareSpecs(cmpDumped, cmpCurrent); err != nil {
		return "", 0, fmt.Errorf("restore: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(orig, &spec); err != nil {
		return "", 0, fmt.Errorf("restore: config.json: %w", err)
	}
	byHook := false
	switch v := spec.Annotations[OutsidePeersAnnotation]; v {
	case "", "ctr-cr":
	case "hook":
		byHook = true
	default:
		return "", 0, fmt.Errorf("restore: config.json: annotation %s=%q: want \"ctr-cr\" or \"hook\"", OutsidePeersAnnotation, v)
	}
	if err := state.validate(); err != nil {
		return "", 0, fmt.Errorf("restore: image %s: %s: %w", dir, StateName, err)
	}
	id := opts.ID
	if id == "" {
		id = meta.ID
	}
	unlock, err := lockContainer(rt, id)
	if err != nil {
		return "", 0, fmt.Errorf("restore %s: %w", id, err)
	}
	defer unlock()
	if rt.Exists(ctx, id) {
		return "", 0, fmt.Errorf("restore: container %s exists already (restore a copy with --id NEW_ID)", id)
	}
	terminal := spec.Process != nil && spec.Process.Terminal
	switch {
	case terminal && opts.ConsoleSocket == "":
		return "", 0, fmt.Errorf("restore %s: the container has a terminal (process.terminal): give --console-socket PATH to receive its new console", id)
	case !terminal && opts.ConsoleSocket != "":
		return "", 0, fmt.Errorf("restore %s: --console-socket, but the container has no terminal (process.terminal is false)", id)
	}
	initFilter, err := checkTaskCeiling(&spec, img)
	if err != nil {
		return "", 0, fmt.Errorf("restore %s: image %s: %w", id, dir, err)
	}
	if err := checkStateCeiling(&spec, &state); err != nil {
		return "", 0, fmt.Errorf("restore %s: image %s: %s: %w", id, dir, StateName, err)
	}
	tc := time.Now()
	rst.ValidateMs = ms(tc.Sub(t0))
	pid, err := createPrivileged(ctx, rt, bundle, id, orig, initFilter, opts.ConsoleSocket, opts.Platform.CreateArgs)
	if err != nil {
		return "", 0, fmt.Errorf("restore %s: %w", id, err)
	}
	tn := time.Now()
	rst.CreateMs = ms(tn.Sub(tc))
	ok := false
	undoParts := func() error { return nil }
	defer func() {
		if !ok {
			undoParts()
			rt.Delete(context.Background(), id)
		}
	}()
	pr := &restoreEnv{pid: pid, img: img, spec: &spec, state: &state, outsideByHook: byHook, emptyNet: opts.Platform.EmptyNet}
	ociState := &specs.State{Version: specs.Version, ID: id, Status: specs.StateCreated, Pid: pid, Bundle: bundle, Annotations: spec.Annotations}
	// The dump's lock went with the old network namespace: the engine
	// locks the connections again in the new one (Relock) before the
	// namespaces' state, links included, goes back in (before) and the
	// hooks run; after, the tree runs in a created container.
	before := func(pid int) error {
		// the parts go back before any task runs (nsParts has the order)
		rst.NamespaceMs = map[string]float64{}
		undo, err := restoreParts(pr, nsParts, rst.NamespaceMs)
		if err != nil {
			return err // the parts undone
		}
		undoParts = undo
		fault.Point("restore:namespaces")
		th := time.Now()
		rst.NamespacesMs = ms(th.Sub(tn))
		sb, err := hookSandbox(pid, bundle, img, rt.Name, &spec)
		if err != nil {
			return fmt.Errorf("hooks: %w", err)
		}
		for _, p := range []hooks.Phase{hooks.Prestart, hooks.CreateRuntime, hooks.CreateContainer, hooks.StartContainer} {
			if err := hooks.Run(ctx, spec.Hooks, p, ociState, sb); err != nil {
				return err
			}
		}
		rst.HooksMs = ms(time.Since(th))
		return nil
	}
	after := func(int) error {
		fault.Point("restore:restored") // the tree runs in a created container
		return finishParts(pr, nsParts)
	}
	res, err := restore.RestoreImage(ctx, img, restore.Options{PidMethod: restore.PidClone3, Terminal: -1, Detach: true, Adopt: pid,
		Inherit: opts.Platform.Inherit, TCPClose: opts.Platform.TCPClose, Relock: true, Notify: &restoreNotify{before: before, after: after}})
	if err != nil {
		return "", 0, fmt.Errorf("restore %s: %w", id, err)
	}
	rst.Restore = res.Stats
	ts := time.Now()
	if err := start(rt, id); err != nil {
		return "", 0, fmt.Errorf("restore %s: %w", id, err)
	}
	ok = true
	fault.Point("restore:started")
	rst.StartMs = ms(time.Since(ts))
	rst.TotalMs = ms(time.Since(t0))
	// poststart failures do not undo the start (runtime-spec): reported
	ociState.Status = specs.StateRunning
	if err := hooks.Run(ctx, spec.Hooks, hooks.Poststart, ociState, nil); err != nil {
		fmt.Fprintf(os.Stderr, "Warn  (ctr-cr restore): container %s: %v\n", id, err)
	}
	return id, pid, nil
}

// hookSandbox describes the restored container for its createContainer and
// startContainer hooks (nil when it has none): the bundle's own process
// (not the privileged copy the sandbox was created from), its rootfs on
// the host, and the seccomp filter chain of its init as dumped (what the
// runtime installed from linux.seccomp).
func hookSandbox(pid int, bundle string, img *image.Reader, runtime string, spec *specs.Spec) (*hooks.Sandbox, error) {
	if len(hooks.Of(spec.Hooks, hooks.CreateContainer)) == 0 && len(hooks.Of(spec.Hooks, hooks.StartContainer)) == 0 {
		return nil, nil
	}
	if spec.Root == nil || spec.Root.Path == "" {
		return nil, errors.New("config.json has no root.path")
	}
	rootfs := spec.Root.Path
	if !filepath.IsAbs(rootfs) {
		rootfs = filepath.Join(bundle, rootfs)
	}
	sb := &hooks.Sandbox{Pid: pid, Rootfs: rootfs, Process: spec.Process, Exe: "/proc/self/exe", Bundle: bundle, Runtime: runtime,
		SpecSeccomp: spec.Linux != nil && spec.Linux.Seccomp != nil}
	if len(hooks.Of(spec.Hooks, hooks.StartContainer)) > 0 {
		chain, err := initSeccomp(img)
		if err != nil {
			return nil, err
		}
		sb.Seccomp = chain
	}
	return sb, nil
}

// initSeccomp reads the seccomp filter chain of the image's root task (the
// container's init) from the checkpoint.
func initSeccomp(img *image.Reader) ([][]byte, error) {
	pst, err := img.Pstree()
	if err != nil {
		return nil, err
	}
	for _, e := range pst {
		if e.Ppid != 0 {
			continue
		}
		core, err := img.Core(int(e.Pid))
		if err != nil {
			return nil, err
		}
		if len(core.Threads) == 0 {
			return nil, fmt.Errorf("core-%d.img: no thread", e.Pid)
		}
		var chain [][]byte
		for _, f := range core.Threads[0].Seccomp {
			chain = append(chain, f.Bpf)
		}
		return chain, nil
	}
	return nil, errors.New("pstree.img: no root task")
}

// readLayer reads the container layer's file name of the opened image:
// through the inventory, its checksum verified, or, in an image of a
// format that did not list the layer's files (before version 3), as it
// was read then.
func readLayer(img *image.Reader, name string) ([]byte, error) {
	if img.LayerFilesListed() {
		return img.ReadLayerFile(name, maxImageJSON)
	}
	return readImageFile(filepath.Join(img.Dir(), name))
}

// openLayer opens the container layer's file name of the opened image for
// streaming (a tmpfs archive), as readLayer reads one.
func openLayer(img *image.Reader, name string) (*os.File, error) {
	if img.LayerFilesListed() {
		return img.OpenLayerFile(name)
	}
	return openImageFile(filepath.Join(img.Dir(), name))
}

// readLayerJSON decodes the JSON layer file name of img into v.
func readLayerJSON(img *image.Reader, name string, v any) error {
	b, err := readLayer(img, name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func readJSON(path string, v any) error {
	b, err := readImageFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return nil
}

// validate checks the parts of container.json read back from an image
// (each part's validate, in nsParts' order).
func (s *State) validate() error { return validateParts(s, nsParts) }

// OutsidePeersAnnotation in config.json says who wires the host side of the
// container's veths at restore: "ctr-cr" (the default: put back on the
// bridge it was a port of, and up, as at the checkpoint) or "hook" (ctr-cr
// creates it with its name and MAC, down and on no bridge; a createRuntime
// or prestart hook, which runs after it, attaches it as the host's network
// setup wants).
const OutsidePeersAnnotation = "org.ctr-cr.network.outside-peers"

// start does the runtime's created→running step for a restored init.
// Both runtimes mark a created container by an exec fifo in its state
// directory and tell created from running by whether it is still there.
// `start` hands the init its go-ahead through it and removes it:
//
//	runc: the init writes one byte (blocking until someone reads); `runc
//	      start` reads it, then removes the fifo.
//	crun: the init holds the fifo open for reading and waits for a byte;
//	      `crun start` opens it for writing, unlinks it and writes.
//
// Neither does more for a container whose hooks ctr-cr runs itself (the
// runtime's copy of the config keeps poststop only). The init that would
// take the go-ahead was replaced by the restored tree, which already runs,
// so ctr-cr removes the fifo itself: the runtime's own end state, without
// its 20-30 ms process start (runc). A state directory without the fifo is
// an error: the runtime no longer takes the container for created.
func start(rt *Runtime, id string) error {
	fifo := filepath.Join(rt.stateDir(id), "exec.fifo")
	fi, err := os.Lstat(fifo)
	if err != nil {
		return fmt.Errorf("%s start: exec fifo: %w", rt.Name, err)
	}
	if fi.Mode()&fs.ModeNamedPipe == 0 {
		return fmt.Errorf("%s start: %s is not a fifo (%v)", rt.Name, fifo, fi.Mode().Type())
	}
	if err := os.Remove(fifo); err != nil {
		return fmt.Errorf("%s start: %w", rt.Name, err)
	}
	return nil
}

// ownCaps lists the capabilities in ctr-cr's own bounding set: all that the
// restore stub can be given (root here may lack some, e.g.
// CAP_SYS_RESOURCE).
func ownCaps() ([]string, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return nil, fmt.Errorf("CapBnd %q: %w", v, err)
			}
			return capnames.FromMask(mask), nil
		}
	}
	return nil, errors.New("no CapBnd in /proc/self/status")
}

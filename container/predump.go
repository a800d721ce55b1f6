package container

// Pre-copy for containers (issue 16): `checkpoint --pre-dump` copies the
// container's memory while it runs and leaves the dirty tracking armed
// (core/dump.PreDump); `checkpoint --parent-path` is the final checkpoint
// of the chain, writing only the pages written since the last round, with
// the container's state (namespaces, mounts, cgroup) as any checkpoint.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/core/dump"
	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/internal/oprec"
	"github.com/ctr-cr/ctr-cr/internal/version"
)

// PreDumpName is the file a container's pre-dump round writes beside its
// memory image (PreDumpMeta): which container the round is of, and that
// the image is not a checkpoint that can be restored by itself.
const PreDumpName = "ctr-cr-predump.json"

// PreDumpMeta describes a container's pre-dump round (ctr-cr-predump.json).
type PreDumpMeta struct {
	ID          string    `json:"id"`
	Runtime     string    `json:"runtime"`
	Bundle      string    `json:"bundle"`
	InitPid     int       `json:"init_pid"`
	Dumped      time.Time `json:"dumped"`
	ToolVersion string    `json:"tool_version"`
}

// ErrPreDumpImage: a pre-dump round was given where a checkpoint was
// wanted (a restore).
var ErrPreDumpImage = errors.New("a pre-dump round (memory only), not a checkpoint: restore the final checkpoint made with --parent-path")

// LayerFile reports whether name is a file the container layer writes
// into an image directory (beside the core image's own files): what a
// migration sends and its receiver accepts besides the image files.
func LayerFile(name string) bool {
	switch name {
	case SpecDumpName, MetadataName, StateName, StdioName, PreDumpName:
		return true
	}
	// tmpfs contents (the mounts part): tmpfs-N.tar
	return strings.HasPrefix(name, "tmpfs-") && strings.HasSuffix(name, ".tar") &&
		!strings.ContainsAny(name, "/\x00") && len(name) <= 255
}

// PreDumpOptions control PreDump.
type PreDumpOptions struct {
	ID        string
	Runtime   *Runtime
	ImagePath string // "": BUNDLE/checkpoint
	// ParentPath is the previous round, relative to the image directory
	// ("": a first round).
	ParentPath string
	Jobs       int
	Warn       func(format string, args ...any)
	// PagesSink and Commit: as in dump.PreDumpOptions (a page server).
	PagesSink func(name string) (io.WriteCloser, error)
	Commit    func() error
}

// PreDump runs a pre-copy round of the running container opts.ID into its
// image directory and returns the directory and the round's statistics.
// The container runs on: its tree is stopped (ptrace) only to list its
// mappings and arm the dirty tracking, then its memory is copied while it
// runs. The image (memory only, PreDumpName beside it) is the parent of
// the next round or of the final `checkpoint --parent-path`; it is written
// beside its place and takes it once complete, as a checkpoint's. A paused
// container is refused: its tasks cannot be stopped by ptrace while the
// freezer holds them, and a pre-dump is for a container that runs.
func PreDump(ctx context.Context, opts PreDumpOptions) (string, *dump.Stats, error) {
	rt := opts.Runtime
	unlock, err := lockContainer(rt, opts.ID)
	if err != nil {
		return "", nil, fmt.Errorf("pre-dump %s: %w", opts.ID, err)
	}
	defer unlock()
	st, ok := rt.runningFromDir(opts.ID)
	if !ok {
		if st, err = rt.State(ctx, opts.ID); err != nil {
			return "", nil, fmt.Errorf("pre-dump %s: %w", opts.ID, err)
		}
	}
	if st.Status != specs.StateRunning {
		return "", nil, fmt.Errorf("pre-dump %s: status %q (a pre-dump copies the memory of a running container): %w", opts.ID, st.Status, ErrNotRunning)
	}
	if st.Pid <= 0 {
		return "", nil, fmt.Errorf("pre-dump %s: the runtime reports no init pid", opts.ID)
	}
	dir, err := imageDir(opts.ImagePath, st.Bundle)
	if err != nil {
		return "", nil, fmt.Errorf("pre-dump %s: %w", opts.ID, err)
	}
	if err := checkParent(dir, opts.ParentPath, opts.ID); err != nil {
		return "", nil, fmt.Errorf("pre-dump %s: %w", opts.ID, err)
	}
	stage, err := stageImage(dir)
	if err != nil {
		return "", nil, fmt.Errorf("pre-dump %s: %w", opts.ID, err)
	}
	defer stage.done()
	if err := oprec.AddPartial(oprec.Partial{Dir: stage.tmp, Staging: true}); err != nil {
		return "", nil, fmt.Errorf("pre-dump %s: %w", opts.ID, err)
	}
	meta := PreDumpMeta{ID: opts.ID, Runtime: rt.Name, Bundle: st.Bundle, InitPid: st.Pid, Dumped: time.Now().UTC(), ToolVersion: version.Version}
	mb, _ := json.MarshalIndent(&meta, "", "  ")
	if err := writeFile(filepath.Join(stage.tmp, PreDumpName), append(mb, '\n')); err != nil {
		return "", nil, fmt.Errorf("pre-dump %s: %w", opts.ID, err)
	}
	stats, err := dump.PreDump(ctx, st.Pid, stage.tmp, dump.PreDumpOptions{
		ParentPath: opts.ParentPath, Jobs: opts.Jobs, Warn: opts.Warn, PagesSink: opts.PagesSink, Commit: opts.Commit,
		LayerFiles: []string{PreDumpName},
	})
	if err != nil {
		return "", nil, fmt.Errorf("pre-dump %s: %w", opts.ID, err)
	}
	if err := stage.commit(); err != nil {
		return "", nil, fmt.Errorf("pre-dump %s: %w", opts.ID, err)
	}
	return dir, stats, nil
}

// checkParent checks the parent of a round written into dir: not dir
// itself (the new image replaces its directory whole), an image directory
// that exists and, when it is a container's round or checkpoint, one of
// container id. The chain itself (every ancestor there and unaltered) is
// checked by core/dump before the tree is touched.
func checkParent(dir, parentPath, id string) error {
	if parentPath == "" {
		return nil
	}
	if filepath.IsAbs(parentPath) {
		return fmt.Errorf("--parent-path %s: want a path relative to the image directory (../DIR, as CRIU's)", parentPath)
	}
	pdir := image.ParentDir(dir, parentPath)
	if filepath.Clean(pdir) == filepath.Clean(dir) {
		return fmt.Errorf("--parent-path %s: is the image directory itself, which the new image replaces", parentPath)
	}
	if _, err := os.Stat(filepath.Join(pdir, image.InventoryName)); err != nil {
		return fmt.Errorf("parent image %s: %w: %w", pdir, image.ErrChain, err)
	}
	var of string
	var pm PreDumpMeta
	var m Metadata
	if err := readJSON(filepath.Join(pdir, PreDumpName), &pm); err == nil {
		of = pm.ID
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("parent image %s: %w", pdir, err)
	} else if err := readJSON(filepath.Join(pdir, MetadataName), &m); err == nil {
		of = m.ID
	}
	if of != "" && of != id {
		return fmt.Errorf("parent image %s is of container %s, not %s", pdir, of, id)
	}
	return nil
}

// preDumpOnly returns ErrPreDumpImage when dir holds a pre-dump round
// rather than a checkpoint (no ctr-cr.json, a ctr-cr-predump.json).
func preDumpOnly(dir string) error {
	if _, err := os.Lstat(filepath.Join(dir, MetadataName)); err == nil {
		return nil
	}
	if _, err := os.Lstat(filepath.Join(dir, PreDumpName)); err == nil {
		return ErrPreDumpImage
	}
	return nil
}

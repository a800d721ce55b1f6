package cgroup

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/cgroups/v3"

	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/internal/mountinfo"
)

// Mode is how the host's cgroup hierarchies are mounted.
type Mode int

const (
	// ModeNone: no cgroup filesystem is mounted.
	ModeNone Mode = iota
	// ModeV1: only v1 (legacy) hierarchies.
	ModeV1
	// ModeHybrid: v1 hierarchies plus a cgroup2 mount (typically
	// /sys/fs/cgroup/unified, usually without controllers).
	ModeHybrid
	// ModeV2: only the unified hierarchy.
	ModeV2
)

func (m Mode) String() string {
	switch m {
	case ModeV1:
		return "v1"
	case ModeHybrid:
		return "hybrid"
	case ModeV2:
		return "v2"
	}
	return "none"
}

var (
	// ErrNoController: the cgroup has no directory for a controller an
	// operation needs (hierarchy not mounted, process not in it, or the v2
	// controller not enabled).
	ErrNoController = errors.New("controller not available")
	// ErrHasProcesses: Remove found processes in a cgroup.
	ErrHasProcesses = errors.New("cgroup has processes")
)

// Paths is where a process sits in each hierarchy: the path inside the
// hierarchy exactly as /proc/PID/cgroup shows it (absolute, "/" is the
// hierarchy root). It is what the container layer stores in its image.
type Paths struct {
	// V1 maps a v1 controller ("memory", "cpu", "cpuacct", "freezer",
	// "name=systemd", ...) to the path in its hierarchy. Controllers
	// mounted together appear once each, with the same path.
	V1 map[string]string `json:"v1,omitempty"`
	// Unified is the path in the cgroup2 hierarchy; "" when the process is
	// not in one (or it is not mounted).
	Unified string `json:"unified,omitempty"`
	// UnifiedControllers are the v2 controllers the unified cgroup had
	// (its cgroup.controllers). Create enables them for the new cgroup.
	UnifiedControllers []string `json:"unified_controllers,omitempty"`
}

// Validate checks paths read from an image: every path absolute, clean,
// without "..", NUL or newline, of sane length; controller names made of
// [a-z0-9_] (or name=[A-Za-z0-9_.-]+ for named hierarchies).
func (p Paths) Validate() error {
	if len(p.V1) == 0 && p.Unified == "" {
		return errors.New("cgroup paths: empty")
	}
	if len(p.V1) > 64 {
		return fmt.Errorf("cgroup paths: %d v1 controllers", len(p.V1))
	}
	for c, path := range p.V1 {
		if !validControllerName(c) {
			return fmt.Errorf("cgroup paths: bad controller name %q", c)
		}
		if err := validPath(path); err != nil {
			return fmt.Errorf("cgroup paths: %s: %w", c, err)
		}
	}
	if p.Unified != "" {
		if err := validPath(p.Unified); err != nil {
			return fmt.Errorf("cgroup paths: unified: %w", err)
		}
	}
	if len(p.UnifiedControllers) > 0 && p.Unified == "" {
		return errors.New("cgroup paths: unified controllers without a unified path")
	}
	if len(p.UnifiedControllers) > 64 {
		return fmt.Errorf("cgroup paths: %d unified controllers", len(p.UnifiedControllers))
	}
	for _, c := range p.UnifiedControllers {
		if !validControllerName(c) || strings.HasPrefix(c, "name=") {
			return fmt.Errorf("cgroup paths: bad unified controller %q", c)
		}
	}
	return nil
}

func validControllerName(c string) bool {
	name, named := strings.CutPrefix(c, "name=")
	if name == "" || len(name) > 64 {
		return false
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
		case named && (r >= 'A' && r <= 'Z' || r == '.' || r == '-'):
		default:
			return false
		}
	}
	return true
}

func validPath(p string) error {
	if len(p) > 4096 {
		return errors.New("path too long")
	}
	if !strings.HasPrefix(p, "/") || filepath.Clean(p) != p {
		return fmt.Errorf("path %q is not absolute and clean", p)
	}
	if strings.ContainsAny(p, "\x00\n") {
		return fmt.Errorf("path %q has NUL or newline", p)
	}
	for _, e := range strings.Split(p, "/") {
		if e == ".." || e == "." {
			return fmt.Errorf("path %q has a %q component", p, e)
		}
	}
	return nil
}

// ParseProcCgroup parses /proc/PID/cgroup content: "ID:controllers:path"
// lines; the "0::path" line is the unified hierarchy.
func ParseProcCgroup(r io.Reader) (Paths, error) {
	v1, unified, err := cgroups.ParseCgroupFromReaderUnified(r)
	if err != nil {
		return Paths{}, fmt.Errorf("parse /proc/PID/cgroup: %w", err)
	}
	p := Paths{Unified: unified}
	if len(v1) > 0 {
		p.V1 = v1
	}
	return p, nil
}

// Mount is one cgroup filesystem mount from mountinfo.
type Mount struct {
	Root    string   // root of the mount inside the hierarchy (field 4)
	Point   string   // mount point (field 5)
	V2      bool     // fstype cgroup2
	Options []string // super options (v1: controllers, name=..., rw)
}

// ParseMountinfo returns the cgroup and cgroup2 mounts of a
// /proc/PID/mountinfo stream (internal/mountinfo parses it; a malformed
// line is an error).
func ParseMountinfo(r io.Reader) ([]Mount, error) {
	infos, err := mountinfo.Parse(r, mountinfo.FSType("cgroup", "cgroup2"))
	if err != nil {
		return nil, fmt.Errorf("parse mountinfo: %w", err)
	}
	return cgroupMounts(infos), nil
}

func cgroupMounts(infos []mountinfo.Info) []Mount {
	var out []Mount
	for _, in := range infos {
		m := Mount{Root: in.Root, Point: in.MountPoint, V2: in.FSType == "cgroup2"}
		if in.SuperOptions != "" {
			m.Options = strings.Split(in.SuperOptions, ",")
		}
		out = append(out, m)
	}
	return out
}

// ModeOf tells the hierarchy mode from a host's cgroup mounts.
func ModeOf(mounts []Mount) Mode {
	var v1, v2 bool
	for _, m := range mounts {
		if m.V2 {
			v2 = true
		} else {
			v1 = true
		}
	}
	switch {
	case v1 && v2:
		return ModeHybrid
	case v1:
		return ModeV1
	case v2:
		return ModeV2
	}
	return ModeNone
}

// dirFor maps a path inside a hierarchy to a directory through the mounts of
// that hierarchy: the mount whose root is the shortest prefix of path wins.
func dirFor(mounts []Mount, v2 bool, controller, path string) (string, bool) {
	best := -1
	for i, m := range mounts {
		if m.V2 != v2 {
			continue
		}
		if !v2 && !hasOption(m.Options, controller) {
			continue
		}
		if m.Root != "/" && path != m.Root && !strings.HasPrefix(path, m.Root+"/") {
			continue
		}
		if best < 0 || len(m.Root) < len(mounts[best].Root) {
			best = i
		}
	}
	if best < 0 {
		return "", false
	}
	m := mounts[best]
	rel := strings.TrimPrefix(path, m.Root)
	if m.Root == "/" {
		rel = path
	}
	return filepath.Join(m.Point, rel), true
}

func hasOption(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

// Cgroup is a process's set of cgroup directories. It is safe to use from
// one goroutine at a time.
type Cgroup struct {
	mode    Mode
	paths   Paths
	v1      map[string]string // controller -> absolute directory
	unified string            // absolute directory, "" if none
}

// resolve maps paths to directories through mounts. Controllers whose
// hierarchy is not mounted here are dropped (they are not in the result's
// Paths either) unless strict, where they are an error.
func resolve(mounts []Mount, p Paths, strict bool) (*Cgroup, error) {
	c := &Cgroup{mode: ModeOf(mounts), v1: map[string]string{}}
	c.paths.V1 = map[string]string{}
	for ctrl, path := range p.V1 {
		dir, ok := dirFor(mounts, false, ctrl, path)
		if !ok {
			if strict {
				return nil, fmt.Errorf("cgroup %s:%s: hierarchy not mounted: %w", ctrl, path, ErrNoController)
			}
			continue
		}
		c.v1[ctrl] = dir
		c.paths.V1[ctrl] = path
	}
	if len(c.paths.V1) == 0 {
		c.paths.V1 = nil
	}
	if p.Unified != "" {
		dir, ok := dirFor(mounts, true, "", p.Unified)
		if ok {
			c.unified = dir
			c.paths.Unified = p.Unified
			c.paths.UnifiedControllers = append([]string(nil), p.UnifiedControllers...)
		} else if strict {
			return nil, fmt.Errorf("cgroup %s: unified hierarchy not mounted: %w", p.Unified, ErrNoController)
		}
	}
	if len(c.v1) == 0 && c.unified == "" {
		return nil, fmt.Errorf("cgroup %v: no mounted hierarchy: %w", p, ErrNoController)
	}
	return c, nil
}

func selfMounts() ([]Mount, error) {
	infos, err := mountinfo.Self(mountinfo.FSType("cgroup", "cgroup2"))
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	return cgroupMounts(infos), nil
}

// ForPid returns the cgroups of process pid (hierarchies that are not
// mounted in our mount namespace are left out). The directories are resolved
// through /proc/self/mountinfo, so the caller must be in the mount namespace
// where it means to use them.
func ForPid(pid int) (*Cgroup, error) {
	name := procfs.PidPath(pid, "cgroup")
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("cgroup of pid %d: %w", pid, err)
	}
	p, err := ParseProcCgroup(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("cgroup of pid %d: %w", pid, err)
	}
	mounts, err := selfMounts()
	if err != nil {
		return nil, err
	}
	c, err := resolve(mounts, p, false)
	if err != nil {
		return nil, fmt.Errorf("cgroup of pid %d: %w", pid, err)
	}
	if err := c.readControllers(); err != nil {
		return nil, fmt.Errorf("cgroup of pid %d: %w", pid, err)
	}
	return c, nil
}

// Open returns the existing cgroup at paths. Every hierarchy named must be
// mounted and every directory must exist (fs.ErrNotExist otherwise).
func Open(p Paths) (*Cgroup, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	mounts, err := selfMounts()
	if err != nil {
		return nil, err
	}
	c, err := resolve(mounts, p, true)
	if err != nil {
		return nil, err
	}
	for _, d := range c.dirs() {
		if _, err := os.Stat(d); err != nil {
			return nil, fmt.Errorf("cgroup %s: open: %w", d, err)
		}
	}
	if p.UnifiedControllers == nil {
		if err := c.readControllers(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// readControllers sets paths.UnifiedControllers from cgroup.controllers.
func (c *Cgroup) readControllers() error {
	if c.unified == "" {
		return nil
	}
	s, err := readString(c.unified, "cgroup.controllers")
	if err != nil {
		return fmt.Errorf("cgroup %s: read cgroup.controllers: %w", c.unified, err)
	}
	c.paths.UnifiedControllers = strings.Fields(s)
	return nil
}

// Mode is the host's hierarchy mode.
func (c *Cgroup) Mode() Mode { return c.mode }

// Paths returns the cgroup's paths inside each hierarchy (a copy).
func (c *Cgroup) Paths() Paths {
	p := Paths{Unified: c.paths.Unified, UnifiedControllers: append([]string(nil), c.paths.UnifiedControllers...)}
	if len(c.paths.V1) > 0 {
		p.V1 = make(map[string]string, len(c.paths.V1))
		for k, v := range c.paths.V1 {
			p.V1[k] = v
		}
	}
	return p
}

// Dir returns the absolute directory of a v1 controller, or of the unified
// hierarchy for controller "". "" when the cgroup has none.
func (c *Cgroup) Dir(controller string) string {
	if controller == "" {
		return c.unified
	}
	return c.v1[controller]
}

// dirs returns every distinct directory, v1 ones sorted, unified last.
func (c *Cgroup) dirs() []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range c.v1 {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	sort.Strings(out)
	if c.unified != "" {
		out = append(out, c.unified)
	}
	return out
}

// readString reads a cgroup file, trimmed.
func readString(dir, file string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// writeString writes one value to an existing cgroup file (never creates
// one: a missing file means a missing controller).
func writeString(dir, file, val string) error {
	f, err := os.OpenFile(filepath.Join(dir, file), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(val)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

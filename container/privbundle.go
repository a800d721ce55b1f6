package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/hooks"
	"github.com/ctr-cr/ctr-cr/internal/fault"
	"github.com/ctr-cr/ctr-cr/internal/oprec"
)

// privateBundleRoot holds the bundles ctr-cr gives the runtime for the
// create of a restore (root only: they hold a privileged config).
const privateBundleRoot = "/run/ctr-cr/restore"

// inertArgs is the process the privileged config names. The restore never
// lets it run (the init is adopted before the container starts), but a
// container left created by a restore that died (ctr-cr killed between
// the create and the adoption) could be started by anyone with `RUNTIME
// start`: then the init execs this, which runs nothing of the container's
// with the privileges meant for the restore stub (runc and crun both fail
// the exec of their own binary's /proc link from inside the container's
// root, and at worst print their version).
var inertArgs = []string{"/proc/self/exe", "--version"}

// privilegedConfig is the bundle's config for the create of a restore:
// every capability ctr-cr has, no no_new_privs, no seccomp, uid 0 (the
// restored tasks get their own back from the image), the creation hooks
// stripped (ctr-cr runs them once the sandbox holds the restored state),
// an inert process, and the bundle's relative paths (root, bind sources)
// made absolute, since the runtime reads it from another directory.
func privilegedConfig(orig []byte, bundle string) ([]byte, error) {
	var s specs.Spec
	if err := json.Unmarshal(orig, &s); err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	if s.Process == nil {
		return nil, errors.New("config.json: no process")
	}
	if s.Root == nil || s.Root.Path == "" {
		return nil, errors.New("config.json: no root.path")
	}
	caps, err := ownCaps()
	if err != nil {
		return nil, err
	}
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
	s.Process.NoNewPrivileges = false
	s.Process.User = specs.User{UID: 0, GID: 0}
	s.Process.Args = inertArgs
	s.Hooks = hooks.Strip(s.Hooks)
	if s.Linux != nil {
		s.Linux.Seccomp = nil
	}
	absPaths(&s, bundle)
	return json.MarshalIndent(&s, "", "\t")
}

// userConfigAbs is the user's config with its bundle-relative paths made
// absolute (as privilegedConfig does), or the user's config as it is if it
// cannot be read as a spec.
func userConfigAbs(orig []byte, bundle string) []byte {
	var s specs.Spec
	if err := json.Unmarshal(orig, &s); err != nil || s.Root == nil {
		return orig
	}
	absPaths(&s, bundle)
	b, err := json.MarshalIndent(&s, "", "\t")
	if err != nil {
		return orig
	}
	return b
}

// absPaths makes the root path and bind sources relative to bundle
// absolute.
func absPaths(s *specs.Spec, bundle string) {
	if s.Root != nil && s.Root.Path != "" && !filepath.IsAbs(s.Root.Path) {
		s.Root.Path = filepath.Join(bundle, s.Root.Path)
	}
	for i, m := range s.Mounts {
		if m.Source != "" && !filepath.IsAbs(m.Source) && isBind(m) {
			s.Mounts[i].Source = filepath.Join(bundle, m.Source)
		}
	}
}

// isBind says whether m is a bind mount (whose source is a path; other
// types' sources are device names).
func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

// privateBundle writes the privileged config into a directory of ctr-cr's
// own (mode 0700 under /run/ctr-cr/restore), never over the user's
// config.json: whatever happens to ctr-cr, the bundle keeps the user's
// config byte for byte.
func privateBundle(orig []byte, bundle, id string) (string, error) {
	priv, err := privilegedConfig(orig, bundle)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(privateBundleRoot, 0o700); err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(privateBundleRoot, safeName(id)+"-")
	if err != nil {
		return "", err
	}
	if err := oprec.AddPartial(oprec.Partial{Dir: dir, Staging: true}); err != nil {
		os.Remove(dir)
		return "", err
	}
	f, err := os.OpenFile(filepath.Join(dir, "config.json"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		_, err = f.Write(priv)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// safeName keeps a container id usable in a file name.
func safeName(id string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, id)
}

// createPrivileged runs `RUNTIME create` for id from a private bundle
// holding the privileged config (privateBundle), points the runtime's
// state back at the user's bundle, and returns the init's pid. With a
// console socket the runtime makes the container's console and sends its
// master there. extra are more options of create (--no-pivot).
func createPrivileged(ctx context.Context, rt *Runtime, bundle, id string, orig, initFilter []byte, console string, extra []string) (int, error) {
	var user specs.Spec
	if err := json.Unmarshal(orig, &user); err != nil {
		return 0, fmt.Errorf("config.json: %w", err)
	}
	if rt.Name == "runc" && user.Linux != nil && user.Linux.Seccomp != nil {
		// checked before the create: the exec state needs it (execstate.go)
		if _, err := libcontainerSeccomp(user.Linux.Seccomp); err != nil {
			return 0, fmt.Errorf("config.json: linux.seccomp: %w", err)
		}
	}
	// written down first: a crash after the create leaves the container
	// "created", which cleanup deletes
	if err := oprec.AddContainer(oprec.Container{Runtime: rt.Bin, Root: rt.Root, ID: id, Bundle: bundle}); err != nil {
		return 0, err
	}
	priv, err := privateBundle(orig, bundle, id)
	if err != nil {
		return 0, fmt.Errorf("private bundle: %w", err)
	}
	defer os.RemoveAll(priv)
	pidFile := filepath.Join(priv, "pid")
	args := []string{"create", "--bundle", priv, "--pid-file", pidFile}
	if console != "" {
		args = append(args, "--console-socket", console)
	}
	args = append(append(args, extra...), id)
	args = rt.globalArgs(args)
	cmd := exec.CommandContext(ctx, rt.Bin, args...)
	null, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	// a file, not a pipe: the runtime's init inherits stderr and keeps it
	// open, so a pipe would never reach its end
	errf, ferr := os.CreateTemp("", "ctr-cr-create-")
	if ferr != nil {
		null.Close()
		return 0, ferr
	}
	defer os.Remove(errf.Name())
	defer errf.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, errf
	err = cmd.Run()
	null.Close()
	if err != nil {
		// The runtime undoes a create that failed itself; deleting id here
		// could remove someone else's container of that id (a concurrent
		// restore, a state root we did not look in).
		msg, _ := os.ReadFile(errf.Name())
		return 0, fmt.Errorf("%s create: %w: %s", rt.Name, err, strings.TrimSpace(string(msg)))
	}
	// From here on nothing may read the privileged config: the private
	// bundle gets the user's (the runtime no longer needs it; a `runc
	// exec` into a container left created by a crash reads it), then the
	// runtime's state names the user's bundle again.
	if err := os.WriteFile(filepath.Join(priv, "config.json.user"), userConfigAbs(orig, bundle), 0o600); err == nil {
		os.Rename(filepath.Join(priv, "config.json.user"), filepath.Join(priv, "config.json"))
	}
	if err := rt.pointBundle(id, bundle, &user, initFilter); err != nil {
		rt.Delete(context.Background(), id)
		return 0, fmt.Errorf("%s create: %w", rt.Name, err)
	}
	fault.Point("restore:created")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		rt.Delete(context.Background(), id)
		return 0, fmt.Errorf("%s create: pid file: %w", rt.Name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		rt.Delete(context.Background(), id)
		return 0, fmt.Errorf("%s create: pid file %q", rt.Name, b)
	}
	return pid, nil
}

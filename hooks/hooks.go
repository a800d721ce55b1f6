// Package hooks runs a bundle's OCI hooks (runtime-spec "hooks") at the
// points of a container restore, and implements `ctr-cr hook PHASE`, the
// entry point for ctr-cr named as a hook in a config.json.
//
// On restore the runtime must not run the creation hooks itself: runc runs
// prestart and createRuntime as soon as the namespaces exist, before the
// checkpoint's mount tree and network devices are back (runc#5296). The
// container layer strips them from the config the runtime creates the
// sandbox from and runs them here once the sandbox holds the restored
// state: prestart and createRuntime (runtime namespace), createContainer
// and startContainer (in the container, where and with the privileges the
// runtime gives them: see Sandbox), then poststart once the restored tree
// runs. poststop stays with the runtime, which runs
// it at delete.
package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Phase names a point of the container lifecycle (runtime-spec).
type Phase string

const (
	Prestart        Phase = "prestart"
	CreateRuntime   Phase = "createRuntime"
	CreateContainer Phase = "createContainer"
	StartContainer  Phase = "startContainer"
	Poststart       Phase = "poststart"
	Poststop        Phase = "poststop"
)

// Phases are the phases in lifecycle order.
var Phases = []Phase{Prestart, CreateRuntime, CreateContainer, StartContainer, Poststart, Poststop}

// Of returns the hooks of phase in h (nil h: none).
func Of(h *specs.Hooks, p Phase) []specs.Hook {
	if h == nil {
		return nil
	}
	switch p {
	case Prestart:
		return h.Prestart //nolint:staticcheck // deprecated by the spec, still run by runtimes
	case CreateRuntime:
		return h.CreateRuntime
	case CreateContainer:
		return h.CreateContainer
	case StartContainer:
		return h.StartContainer
	case Poststart:
		return h.Poststart
	case Poststop:
		return h.Poststop
	}
	return nil
}

// Run runs the hooks of phase in order with the state as JSON on their
// standard input. prestart, createRuntime and poststart hooks run as
// ctr-cr's children in the runtime namespace; createContainer and
// startContainer hooks run in the container sb describes, with the place
// and privileges runc gives them (see Sandbox; sb is required for them).
// The first failure stops the phase and is returned, naming the hook and
// its output.
func Run(ctx context.Context, h *specs.Hooks, p Phase, state *specs.State, sb *Sandbox) error {
	in, err := json.Marshal(state)
	if err != nil {
		return err
	}
	for i, hk := range Of(h, p) {
		if err := runOne(ctx, hk, p, sb, in); err != nil {
			return fmt.Errorf("%s hook %d (%s): %w", p, i, hk.Path, err)
		}
	}
	return nil
}

func runOne(ctx context.Context, hk specs.Hook, p Phase, sb *Sandbox, state []byte) error {
	timeout := 60 * time.Second
	if hk.Timeout != nil {
		if *hk.Timeout <= 0 {
			return fmt.Errorf("timeout %d: must be positive", *hk.Timeout)
		}
		timeout = time.Duration(*hk.Timeout) * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var out bytes.Buffer
	var err error
	if p == CreateContainer || p == StartContainer {
		if sb == nil {
			return fmt.Errorf("%s hooks need the container", p)
		}
		plan, perr := sb.planFor(hk, p)
		if perr != nil {
			return perr
		}
		cmd, barrier, cerr := sb.command(ctx, plan)
		if cerr != nil {
			return cerr
		}
		cmd.Stdin = bytes.NewReader(state)
		cmd.Stdout, cmd.Stderr = &out, &out
		err = sb.runInSandbox(cmd, barrier)
	} else {
		args := hk.Args
		if len(args) == 0 {
			args = []string{hk.Path}
		}
		cmd := exec.CommandContext(ctx, hk.Path, args[1:]...)
		cmd.Args[0] = args[0]
		cmd.Env = hk.Env
		cmd.Stdin = bytes.NewReader(state)
		cmd.Stdout, cmd.Stderr = &out, &out
		err = cmd.Run()
	}
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return fmt.Errorf("timed out after %v", timeout)
		}
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

// Strip returns a copy of h with only the phases the runtime keeps running
// for a restored container (poststop, at delete).
func Strip(h *specs.Hooks) *specs.Hooks {
	if h == nil || len(h.Poststop) == 0 {
		return nil
	}
	return &specs.Hooks{Poststop: h.Poststop}
}

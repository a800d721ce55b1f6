package netdev

import "errors"

// undo is a stack of cleanup actions (in the style of gVisor's
// cleanup.Make/Release): Restore pushes the reverse of every change it makes
// and runs the stack, last first, unless it succeeded and called release.
type undo struct {
	fns []func() error
}

func (u *undo) push(f func() error) { u.fns = append(u.fns, f) }

// release forgets every action: the changes are kept.
func (u *undo) release() { u.fns = nil }

// run performs the actions, last pushed first, and returns their errors joined.
func (u *undo) run() error {
	var errs []error
	for i := len(u.fns) - 1; i >= 0; i-- {
		if err := u.fns[i](); err != nil {
			errs = append(errs, err)
		}
	}
	u.fns = nil
	return errors.Join(errs...)
}

// Package cleanup is the one undo stack of ctr-cr (in the style of
// gVisor's cleanup.Make/Release): a step that changes something pushes the
// change's reverse; on failure the stack runs, last pushed first; on
// success the caller releases it and the changes are kept.
package cleanup

import "errors"

// Stack is a stack of undo actions. The zero value is empty and ready.
type Stack struct {
	fns []func() error
}

// Push adds f, to run before every action pushed earlier.
func (s *Stack) Push(f func() error) { s.fns = append(s.fns, f) }

// Release forgets every action: the changes are kept.
func (s *Stack) Release() { s.fns = nil }

// Run performs the actions, last pushed first, once (the stack is empty
// afterwards), and returns their errors joined: one failing action does
// not stop the others.
func (s *Stack) Run() error {
	var errs []error
	for i := len(s.fns) - 1; i >= 0; i-- {
		if err := s.fns[i](); err != nil {
			errs = append(errs, err)
		}
	}
	s.fns = nil
	return errors.Join(errs...)
}

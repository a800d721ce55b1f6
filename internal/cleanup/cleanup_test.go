package cleanup

import (
	"errors"
	"reflect"
	"testing"
)

func TestStackRunsLastFirstAndJoins(t *testing.T) {
	var s Stack
	var order []int
	e1, e3 := errors.New("one"), errors.New("three")
	s.Push(func() error { order = append(order, 1); return e1 })
	s.Push(func() error { order = append(order, 2); return nil })
	s.Push(func() error { order = append(order, 3); return e3 })
	err := s.Run()
	if !reflect.DeepEqual(order, []int{3, 2, 1}) {
		t.Fatalf("order %v, want [3 2 1]", order)
	}
	if !errors.Is(err, e1) || !errors.Is(err, e3) {
		t.Fatalf("error %v, want both action errors", err)
	}
	if err := s.Run(); err != nil || len(order) != 3 {
		t.Fatalf("second Run: %v, %d actions run, want nothing", err, len(order))
	}
}

func TestStackRelease(t *testing.T) {
	var s Stack
	ran := false
	s.Push(func() error { ran = true; return nil })
	s.Release()
	if err := s.Run(); err != nil || ran {
		t.Fatalf("Run after Release: %v, ran %v", err, ran)
	}
}

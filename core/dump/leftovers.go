package dump

import (
	"github.com/ctr-cr/ctr-cr/core/ptrace"
	"github.com/ctr-cr/ctr-cr/internal/oprec"
)

// What injection puts in a target for the time of a step (the
// injector's area, the page mover's pipes and iovec area) is written in
// the operation record before it is made and forgotten once it is gone:
// `ctr-cr cleanup` (and the sweep every later run starts with) takes back
// what a crash of ctr-cr left in a target that runs on (internal/oprec,
// Injected).
func init() {
	ptrace.RecordArea = recordArea
}

// recordArea records an injection area about to be mapped in pid.
func recordArea(pid int, addr, size uint64, magic []byte) (func(), error) {
	target, err := oprec.ProcOf(pid)
	if err != nil {
		return nil, err
	}
	id, err := oprec.AddInjected(target, nil, []oprec.Area{{Addr: addr, Size: size, Magic: magic}})
	if err != nil {
		return nil, err
	}
	return func() { oprec.ForgetInjected(id) }, nil
}

// moverLeftovers records a page mover's pipes and area (memory.Leftovers)
// as one item of the operation record.
type moverLeftovers struct {
	pid int
	id  uint64
}

func (l *moverLeftovers) item() error {
	if l.id != 0 {
		return nil
	}
	target, err := oprec.ProcOf(l.pid)
	if err != nil {
		return err
	}
	l.id, err = oprec.AddInjected(target, nil, nil)
	return err
}

func (l *moverLeftovers) WillMakePipes(pairs [][2]int) error {
	if err := l.item(); err != nil {
		return err
	}
	return oprec.ExtendInjected(l.id, pairs, nil)
}

func (l *moverLeftovers) WillMap(addr, size uint64, magic []byte) error {
	if err := l.item(); err != nil {
		return err
	}
	return oprec.ExtendInjected(l.id, nil, []oprec.Area{{Addr: addr, Size: size, Magic: magic}})
}

func (l *moverLeftovers) Gone() {
	oprec.ForgetInjected(l.id)
	l.id = 0
}

package oprec

// Injected is what injected calls put in a live process (Target) for the
// time of one step: pipes (Pipes: pairs of fd numbers, read end then
// write end, both close-on-exec, made above every fd the program had)
// and anonymous mappings (Areas, each with a free page on either side:
// the injector's area, the page mover's iovec area). It is recorded
// before they are made, and forgotten once they are gone again. A crash
// in between leaves them in a process that runs on; Sweep seizes it and
// closes and unmaps them by injected calls (injected.go's undo), after
// checking that each still is what was made: both fds of a pair one pipe
// with the flags given, an area still anonymous and private throughout.
type Injected struct {
	ID     uint64   `json:"id"`
	Target Proc     `json:"target"`
	Pipes  [][2]int `json:"pipes,omitempty"`
	Areas  []Area   `json:"areas,omitempty"`
}

// Area is a mapping of Size bytes at Addr whose first bytes are Magic
// once it is made: a mapping there with other bytes (or with pages
// touched but not Magic) is the program's, e.g. mapped after the area was
// unmapped and before the record said so.
type Area struct {
	Addr  uint64 `json:"addr"`
	Size  uint64 `json:"size"`
	Magic []byte `json:"magic,omitempty"`
}

// AddInjected records what injection is about to put in target; the
// returned id names the item for ExtendInjected and ForgetInjected (0,
// and nothing recorded, without Begin).
func AddInjected(target Proc, pipes [][2]int, areas []Area) (uint64, error) {
	var id uint64
	err := add(func(r *Record) {
		r.nextID++
		id = r.nextID
		r.Injected = append(r.Injected, Injected{ID: id, Target: target, Pipes: pipes, Areas: areas})
	})
	if err != nil {
		return 0, err
	}
	return id, nil
}

// ExtendInjected adds pipes and areas about to be made to item id.
func ExtendInjected(id uint64, pipes [][2]int, areas []Area) error {
	if id == 0 {
		return nil
	}
	return add(func(r *Record) {
		for i := range r.Injected {
			if r.Injected[i].ID == id {
				r.Injected[i].Pipes = append(r.Injected[i].Pipes, pipes...)
				r.Injected[i].Areas = append(r.Injected[i].Areas, areas...)
			}
		}
	})
}

// ForgetInjected removes item id: what it lists is gone from its target.
// (A stale item would have a sweep close fds and unmap memory that the
// program may have reused since: items go as soon as their step ends.)
func ForgetInjected(id uint64) error {
	if id == 0 {
		return nil
	}
	return add(func(r *Record) {
		for i := range r.Injected {
			if r.Injected[i].ID == id {
				r.Injected = append(r.Injected[:i], r.Injected[i+1:]...)
				return
			}
		}
	})
}

package dump

// ownerInDump reports whether an F_SETOWN owner (F_OWNER_TID, _PID or
// _PGRP and its id) is a thread, a live process or the group of a live
// group leader of the dump.
func (d *dumper) ownerInDump(typ, id int32) bool {
	for _, t := range d.tasks {
		if t.zombie || t.p == nil {
			continue
		}
		switch typ {
		case 0: // F_OWNER_TID
			for _, th := range t.p.Threads {
				if int32(th.Tid) == id {
					return true
				}
			}
		case 1: // F_OWNER_PID
			if int32(t.pid) == id {
				return true
			}
		case 2: // F_OWNER_PGRP
			if int32(t.pid) == id && t.stat != nil && t.stat.Pgrp == t.pid {
				return true
			}
		}
	}
	return false
}

package restore

// tidOf maps a thread id of the image (dumper's namespace) to the
// restored thread's id in ours, for F_SETOWN_EX F_OWNER_TID.
func (t *tree) tidOf(tid int32) (int, bool) {
	for _, r := range t.tasks {
		if r.exited {
			continue
		}
		for _, th := range r.threads {
			if th.core != nil && th.core.Tid == tid {
				return th.tid, true
			}
		}
	}
	return 0, false
}

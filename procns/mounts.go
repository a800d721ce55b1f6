package procns

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/ctr-cr/ctr-cr/mounts"
)

// maxTmpfs bounds the saved contents of all tmpfs mounts together (they
// are held in memory and in namespaces.json).
const maxTmpfs = 256 << 20

// dumpMounts saves the mount tree of pid (mounts.ReadTree; the mount points
// of c.ExtMounts are external) and the contents of its tmpfs mounts.
func (c *Capturer) dumpMounts(pid int, st *State) error {
	var ext []string
	for mp := range c.ExtMounts {
		ext = append(ext, mp)
	}
	tree, err := mounts.ReadTree(pid, mounts.TreeOptions{Externals: ext})
	if err != nil {
		return err
	}
	st.Mounts = tree
	st.ExtKeys = map[string]string{}
	for _, m := range tree.Mounts {
		if m.Kind != mounts.KindExternal {
			continue
		}
		key := m.External
		if k, ok := c.ExtMounts[m.MountPoint]; ok && k != "" {
			key = k
		}
		st.ExtKeys[m.MountPoint] = key
	}
	total := 0
	for _, m := range tree.Tmpfs() {
		var b bytes.Buffer
		if err := mounts.SaveTmpfs(pid, m.MountPoint, &b); err != nil {
			return fmt.Errorf("tmpfs %s: %w", m.MountPoint, err)
		}
		if total += b.Len(); total > maxTmpfs {
			return fmt.Errorf("tmpfs %s: the tmpfs contents exceed %d MiB", m.MountPoint, maxTmpfs>>20)
		}
		if st.Tmpfs == nil {
			st.Tmpfs = map[string][]byte{}
		}
		st.Tmpfs[m.MountPoint] = b.Bytes()
	}
	return nil
}

// validateMounts checks the mount part of a namespaces.json.
func (st *State) validateMounts() error {
	if st.Mounts == nil {
		return errors.New("mnt: missing")
	}
	if err := st.Mounts.Validate(); err != nil {
		return err
	}
	tmpfs := map[string]bool{}
	for _, m := range st.Mounts.Tmpfs() {
		tmpfs[m.MountPoint] = true
	}
	for mp := range st.Tmpfs {
		if !tmpfs[mp] {
			return fmt.Errorf("mnt: contents for %q, which is not a tmpfs mount of the tree", mp)
		}
	}
	ext := map[string]bool{}
	for _, m := range st.Mounts.Mounts {
		if m.Kind == mounts.KindExternal {
			ext[m.MountPoint] = true
		}
	}
	for mp, key := range st.ExtKeys {
		if !ext[mp] || key == "" {
			return fmt.Errorf("mnt: external key %q for %q, which is not an external mount of the tree", key, mp)
		}
	}
	return nil
}

// ExternalsFor maps the tree's external mounts to host paths from the
// restore's --ext-mount-map KEY:PATH entries (keyed as the dump named
// them); an external with no entry is left to mounts.Apply, which takes it
// as present when the new root has it and fails naming it otherwise.
func (st *State) ExternalsFor(keyToPath map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range st.Mounts.Mounts {
		if m.Kind != mounts.KindExternal {
			continue
		}
		key := st.ExtKeys[m.MountPoint]
		if key == "" {
			key = m.External
		}
		if p, ok := keyToPath[key]; ok {
			out[m.External] = p
		} else if p, ok := keyToPath[m.MountPoint]; ok {
			out[m.External] = p
		}
	}
	return out
}

// ApplyMounts recreates the saved mount tree in the sandbox's mount
// namespace (its root is the restore's --root), with the tmpfs contents.
func (st *State) ApplyMounts(sandbox int, keyToPath map[string]string) error {
	plan := mounts.Plan{Tree: st.Mounts, Externals: st.ExternalsFor(keyToPath),
		Tmpfs: func(m *mounts.Mount) (io.ReadCloser, error) {
			b, ok := st.Tmpfs[m.MountPoint]
			if !ok {
				return nil, nil
			}
			return io.NopCloser(bytes.NewReader(b)), nil
		}}
	if _, err := mounts.Apply(sandbox, plan); err != nil {
		return err
	}
	return nil
}

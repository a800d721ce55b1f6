package container

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// allowedChanges are the config.json fields a restore may see changed
// from the checkpoint's spec.dump: things that name where the container
// lives on this host rather than what it is. Patterns are dotted paths;
// "*" matches any array index or map key.
var allowedChanges = []string{
	"annotations",             // tooling metadata
	"hooks",                   // how this host wires the container up
	"root.path",               // the bundle (and its rootfs) may move
	"mounts.*.source",         // bind sources are host paths
	"linux.cgroupsPath",       // a copy restored beside the original (--id)
	"linux.namespaces.*.path", // namespaces joined by path are host objects
}

// CompareSpecs compares the bundle's config.json (current) with the
// checkpoint's spec.dump (dumped) and returns an error naming the first
// field that changed outside allowedChanges, in a stable order.
func CompareSpecs(dumped, current []byte) error {
	var a, b any
	if err := json.Unmarshal(dumped, &a); err != nil {
		return fmt.Errorf("spec.dump: %w", err)
	}
	if err := json.Unmarshal(current, &b); err != nil {
		return fmt.Errorf("config.json: %w", err)
	}
	var diffs []string
	diff("", a, b, &diffs)
	if len(diffs) == 0 {
		return nil
	}
	return fmt.Errorf("config.json differs from the checkpoint's spec.dump in a field that may not change: %s", strings.Join(diffs, "; "))
}

// allowed reports whether the field at path may change.
func allowed(path []string) bool {
	for _, p := range allowedChanges {
		pat := strings.Split(p, ".")
		if len(pat) > len(path) {
			continue
		}
		ok := true
		for i, s := range pat {
			if s != "*" && s != path[i] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func diff(prefix string, a, b any, out *[]string) {
	var path []string
	if prefix != "" {
		path = strings.Split(prefix, ".")
	}
	if allowed(path) || len(*out) >= 5 {
		return
	}
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			break
		}
		keys := map[string]bool{}
		for k := range av {
			keys[k] = true
		}
		for k := range bv {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			diff(join(prefix, k), av[k], bv[k], out)
		}
		return
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			break
		}
		for i := range av {
			diff(join(prefix, strconv.Itoa(i)), av[i], bv[i], out)
		}
		return
	}
	if !reflect.DeepEqual(a, b) {
		*out = append(*out, fmt.Sprintf("%s (was %s, now %s)", prefix, short(a), short(b)))
	}
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

func short(v any) string {
	if v == nil {
		return "absent"
	}
	b, _ := json.Marshal(v)
	if len(b) > 60 {
		return string(b[:57]) + "..."
	}
	return string(b)
}

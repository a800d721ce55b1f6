package container

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
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
	a, err := decodeSpecTree(dumped)
	if err != nil {
		return fmt.Errorf("spec.dump: %w", err)
	}
	b, err := decodeSpecTree(current)
	if err != nil {
		return fmt.Errorf("config.json: %w", err)
	}
	var diffs []string
	diff("", a, b, &diffs)
	if len(diffs) == 0 {
		return nil
	}
	return fmt.Errorf("config.json differs from the checkpoint's spec.dump in a field that may not change: %s", strings.Join(diffs, "; "))
}

// decodeSpecTree decodes a JSON document into maps, slices and leaves,
// keeping numbers as their text (json.Number): through float64, two
// different 64-bit limits above 2^53 (memory limits in bytes) would
// compare equal.
func decodeSpecTree(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("data after the top-level value")
	}
	return v, nil
}

// leafEqual compares two leaves of decodeSpecTree: numbers by value
// (integers exactly, "1" and "1.0" alike), anything else deeply.
func leafEqual(a, b any) bool {
	an, aok := a.(json.Number)
	bn, bok := b.(json.Number)
	if !aok || !bok {
		return reflect.DeepEqual(a, b)
	}
	if an == bn {
		return true
	}
	if x, err := strconv.ParseInt(string(an), 10, 64); err == nil {
		if y, err := strconv.ParseInt(string(bn), 10, 64); err == nil {
			return x == y
		}
	}
	if x, err := strconv.ParseUint(string(an), 10, 64); err == nil {
		if y, err := strconv.ParseUint(string(bn), 10, 64); err == nil {
			return x == y
		}
	}
	x, errx := strconv.ParseFloat(string(an), 64)
	y, erry := strconv.ParseFloat(string(bn), 64)
	if errx != nil || erry != nil {
		return false
	}
	// an integer beyond float64's exact range only equals itself
	if isInt(an) || isInt(bn) {
		if math.Abs(x) >= 1<<53 || math.Abs(y) >= 1<<53 {
			return false
		}
	}
	return x == y
}

// isInt reports whether n is written as an integer.
func isInt(n json.Number) bool { return !strings.ContainsAny(string(n), ".eE") }

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
	if !leafEqual(a, b) {
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

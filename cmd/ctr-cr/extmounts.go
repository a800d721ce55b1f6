package main

// CRIU's options for a mount namespace the image carries (procns):
// dump --ext-mount-map MOUNTPOINT:KEY / --external mnt[MOUNTPOINT]:KEY name
// the mounts that come from outside the tree; restore --ext-mount-map
// KEY:PATH / --external mnt[KEY]:PATH give the host path for each key, and
// --root DIR the root of the restored mount namespace.

import (
	"fmt"
	"regexp"
	"strings"
)

var externalMnt = regexp.MustCompile(`^mnt\[([^\]]+)\]:(.+)$`)

// extMountValue is the repeatable --ext-mount-map A:B option: m[A] = B.
// "auto" (CRIU: find external binds by itself) is accepted as what ctr-cr
// does anyway: a mount of a file system the tree cannot recreate whose
// source is not in the tree is external, keyed by its mount point.
type extMountValue struct{ m map[string]string }

func (v extMountValue) String() string { return "" }

func (v extMountValue) Set(s string) error {
	if s == "auto" {
		return nil
	}
	a, b, ok := strings.Cut(s, ":")
	if !ok || a == "" || b == "" {
		return fmt.Errorf("%q: want A:B (dump: MOUNTPOINT:KEY, restore: KEY:PATH)", s)
	}
	return v.add(a, b)
}

func (v extMountValue) add(a, b string) error {
	if old, dup := v.m[a]; dup && old != b {
		return fmt.Errorf("%s given twice", a)
	}
	v.m[a] = b
	return nil
}

// externalValue is the repeatable --external option; mnt[A]:B is
// --ext-mount-map A:B; at restore veth[IF]:HOST[@BRIDGE] (LXC's) is
// collected in veths, checked against the image (procns.CheckVeths);
// other kinds are refused by name.
type externalValue struct {
	mnt   extMountValue
	veths *[]string
}

func (v externalValue) String() string { return "" }

func (v externalValue) Set(s string) error {
	if m := externalMnt.FindStringSubmatch(s); m != nil {
		return v.mnt.add(m[1], m[2])
	}
	if v.veths != nil && strings.HasPrefix(s, "veth[") {
		*v.veths = append(*v.veths, s)
		return nil
	}
	return fmt.Errorf("%q: not supported: ctr-cr takes --external mnt[...]:... (and veth[...] on restore) only", s)
}

// extMountOptions are the options of dump or restore that fill m (and,
// restore, veths).
func extMountOptions(m map[string]string, veths *[]string) []option {
	restore := veths != nil
	help := "a mount of the tree that comes from outside (a host bind, the host's /dev), by mount point, and the key a restore maps back; repeatable"
	arg := "MOUNTPOINT:KEY"
	if restore {
		help = "the host path to bind for the image's external mount KEY (its mount point unless the dump named it); repeatable"
		arg = "KEY:PATH"
	}
	return []option{
		{names: []string{"ext-mount-map"}, arg: arg, value: extMountValue{m}, help: help},
		{names: []string{"external"}, arg: "mnt[" + strings.Replace(arg, ":", "]:", 1), value: externalValue{extMountValue{m}, veths},
			help: "the same as --ext-mount-map; restore: also veth[IF]:HOST[@BRIDGE], which must name the image's veth IF, its outside end and bridge"},
	}
}

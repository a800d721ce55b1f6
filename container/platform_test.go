package container

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// podman's restore --import rebuilds config.json: the same mounts in
// another order, binds' propagation spelled private for rprivate. That is
// the same container; a mount moved across one it is nested in, or a
// changed mount, is not.
func TestPlatformSpecMountOrder(t *testing.T) {
	dumped := `{"mounts":[
		{"destination":"/proc","type":"proc","source":"proc"},
		{"destination":"/sys","type":"sysfs","source":"sysfs","options":["ro"]},
		{"destination":"/etc/hosts","type":"bind","source":"/a/hosts","options":["bind","rprivate"]},
		{"destination":"/dev/shm","type":"bind","source":"/a/shm","options":["bind","rprivate","nosuid"]},
		{"destination":"/etc/hostname","type":"bind","source":"/a/hostname","options":["bind","rprivate"]},
		{"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["rprivate","ro"]}]}`
	current := `{"mounts":[
		{"destination":"/proc","type":"proc","source":"proc"},
		{"destination":"/sys","type":"sysfs","source":"sysfs","options":["ro"]},
		{"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["rprivate","ro"]},
		{"destination":"/etc/hostname","type":"bind","source":"/b/hostname","options":["bind","private"]},
		{"destination":"/etc/hosts","type":"bind","source":"/b/hosts","options":["bind","private"]},
		{"destination":"/dev/shm","type":"bind","source":"/b/shm","options":["bind","private","nosuid"]}]}`
	if err := CompareSpecs([]byte(dumped), []byte(current)); err == nil {
		t.Fatal("the strict comparison took the reordered mounts as equal: the test proves nothing")
	}
	if err := CompareSpecs(platformSpecDumped([]byte(dumped)), platformSpec([]byte(dumped), []byte(current))); err != nil {
		t.Errorf("reordered mounts refused: %v", err)
	}
	// /sys/fs/cgroup before /sys: /sys would cover it
	crossed := strings.Replace(current, `{"destination":"/sys","type":"sysfs","source":"sysfs","options":["ro"]},`, "", 1)
	crossed = strings.Replace(crossed, `{"destination":"/dev/shm"`, `{"destination":"/sys","type":"sysfs","source":"sysfs","options":["ro"]},{"destination":"/dev/shm"`, 1)
	if err := CompareSpecs(platformSpecDumped([]byte(dumped)), platformSpec([]byte(dumped), []byte(crossed))); err == nil {
		t.Error("a mount moved after one nested in it was accepted")
	}
	// rprivate on a recursive bind is not private
	rbind := strings.ReplaceAll(dumped, `"options":["bind","rprivate"]`, `"options":["rbind","rprivate"]`)
	rcur := strings.ReplaceAll(current, `"options":["bind","private"]`, `"options":["rbind","private"]`)
	if err := CompareSpecs(platformSpecDumped([]byte(rbind)), platformSpec([]byte(rbind), []byte(rcur))); err == nil {
		t.Error("private taken for rprivate on an rbind")
	}
	// a mount changed in type
	changed := strings.Replace(current, `"type":"cgroup"`, `"type":"tmpfs"`, 1)
	if err := CompareSpecs(platformSpecDumped([]byte(dumped)), platformSpec([]byte(dumped), []byte(changed))); err == nil {
		t.Error("a changed mount accepted")
	}
}

// descriptors.json: each pipe among the old fds 0-2 maps to the fd number
// it had; other files and damaged files are not taken as pipes.
func TestStdioInherit(t *testing.T) {
	dir := t.TempDir()
	if m, err := StdioInherit(dir); err != nil || m != nil {
		t.Errorf("no descriptors.json: %v %v", m, err)
	}
	write := func(s string) {
		if err := os.WriteFile(filepath.Join(dir, StdioName), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`["/dev/null","pipe:[123]","pipe:[124]"]`)
	m, err := StdioInherit(dir)
	if want := map[string]int{"pipe:[123]": 1, "pipe:[124]": 2}; err != nil || !reflect.DeepEqual(m, want) {
		t.Errorf("got %v %v, want %v", m, err, want)
	}
	write(`["pipe:[9]","pipe:[9]","socket:[5]"]`)
	if m, err := StdioInherit(dir); err != nil || !reflect.DeepEqual(m, map[string]int{"pipe:[9]": 0}) {
		t.Errorf("shared pipe: %v %v", m, err)
	}
	for _, bad := range []string{`{`, `["a","b","c","d"]`, `[1,2]`} {
		write(bad)
		if _, err := StdioInherit(dir); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

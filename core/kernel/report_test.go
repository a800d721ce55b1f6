package kernel

import (
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReport checks that the report names every feature and, as root, that
// this machine has every required one.
func TestReport(t *testing.T) {
	var buf bytes.Buffer
	missing := Report(&buf)
	out := buf.String()
	t.Logf("Report returned %d:\n%s", missing, out)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != len(catalog)+2 {
		t.Errorf("report has %d lines, want header + %d features + summary", len(lines), len(catalog))
	}
	for _, s := range catalog {
		found := false
		for _, l := range lines {
			if strings.HasPrefix(l, s.name+" ") {
				found = true
			}
		}
		if !found {
			t.Errorf("report does not list %s", s.name)
		}
	}
	if !strings.Contains(lines[len(lines)-1], "features probed") {
		t.Errorf("no summary line: %q", lines[len(lines)-1])
	}
	if os.Geteuid() == 0 && missing != 0 {
		for _, f := range Probe() {
			if f.Required && !f.Present {
				t.Errorf("required feature %s missing: %s", f.Name, f.Detail)
			}
		}
		t.Errorf("Report returned %d missing required features as root", missing)
	}
}

// TestProbeCatalog checks that Probe answers for every catalog entry, in
// order, and that the catalog is well formed.
func TestProbeCatalog(t *testing.T) {
	fs := Probe()
	if len(fs) != len(catalog) {
		t.Fatalf("Probe returned %d features, catalog has %d", len(fs), len(catalog))
	}
	seen := map[string]bool{}
	for i, f := range fs {
		if f.Name != catalog[i].name {
			t.Errorf("feature %d is %s, want %s", i, f.Name, catalog[i].name)
		}
		if seen[f.Name] {
			t.Errorf("duplicate feature %s", f.Name)
		}
		seen[f.Name] = true
		if f.Disables == "" {
			t.Errorf("%s: empty Disables", f.Name)
		}
		if f.Detail == "" || f.Detail == "not probed" {
			t.Errorf("%s: no probe result (Detail %q)", f.Name, f.Detail)
		}
	}
	byName := func(n string) Feature { return fs[slices.IndexFunc(fs, func(f Feature) bool { return f.Name == n })] }
	if byName(fNsLastPid).Required == byName(fClone3SetTid).Present {
		t.Errorf("ns-last-pid Required should be the negation of clone3-set-tid Present")
	}
}

// TestProbeFastAndClean checks the time budget and that Probe leaves no
// descriptor or child process behind.
func TestProbeFastAndClean(t *testing.T) {
	Probe() // warm up: lazily created runtime descriptors (netpoll) and caches
	before := openFds(t)
	best := time.Hour
	for range 3 {
		start := time.Now()
		Probe()
		best = min(best, time.Since(start))
	}
	t.Logf("fastest Probe: %v", best)
	if best > 50*time.Millisecond {
		t.Errorf("Probe took %v, budget 50ms", best)
	}
	if after := openFds(t); !slices.Equal(before, after) {
		t.Errorf("descriptors changed: before %v, after %v", before, after)
	}
	var ws unix.WaitStatus
	if pid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL, nil); err != unix.ECHILD {
		t.Errorf("a child is left behind: wait4 = %d, %v", pid, err)
	}
}

// openFds lists the open descriptors of this process.
func openFds(t *testing.T) []string {
	t.Helper()
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	names, err := d.Readdirnames(-1)
	self := int(d.Fd())
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	names = slices.DeleteFunc(names, func(n string) bool { return n == strconv.Itoa(self) })
	slices.Sort(names)
	return names
}

// TestWriteReport checks the table format and the count on synthetic input.
func TestWriteReport(t *testing.T) {
	fs := []Feature{
		{Name: "a", Required: true, Present: true, Detail: "ok", Disables: "x"},
		{Name: "b", Required: true, Present: false, Detail: "EPERM:\nno", Disables: "y"},
		{Name: "c", Required: false, Present: false, Detail: "", Disables: "z"},
	}
	var buf bytes.Buffer
	if n := writeReport(&buf, fs, time.Millisecond); n != 1 {
		t.Errorf("writeReport returned %d, want 1", n)
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("got %d lines:\n%s", len(lines), buf.String())
	}
	for i, want := range [][]string{
		{"FEATURE", "STATUS", "NEED", "DETAIL", "DISABLES"},
		{"a", "present", "required", "ok", "x"},
		{"b", "MISSING", "required", "EPERM: no", "y"},
		{"c", "MISSING", "optional", "-", "z"},
	} {
		f := strings.Fields(lines[i])
		if !strings.HasPrefix(strings.Join(f, " "), strings.Join(want, " ")) {
			t.Errorf("line %d = %q, want fields %q", i, lines[i], want)
		}
	}
	if want := "3 features probed in 1ms: 2 missing, 1 of them required"; lines[4] != want {
		t.Errorf("summary %q, want %q", lines[4], want)
	}
}

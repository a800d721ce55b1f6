package bundletests

// Pre-copy of containers (issue 16): `checkpoint --pre-dump` rounds while
// the container runs, the final `checkpoint --parent-path`, the restore
// from the tip; and `migrate CONTAINER --to` (migrate_test.go).

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// memoryScript keeps ~60 KiB of shell variables whose MD5 it checks ten
// times a second against the one taken at its start, and writes "ok N"
// (N counting in its memory) or "BAD N" to /tmp/state; with nc it also
// echoes a TCP connection on port 7777 (nc's memory is the connection's).
const memoryScript = `s=""; i=0; while [ $i -lt 3000 ]; do s="$s$i-abcdefghijklmnop,"; i=$((i+1)); done
want=$(echo "$s" | md5sum); n=0
while true; do n=$((n+1)); if [ "$(echo "$s" | md5sum)" = "$want" ]; then echo "ok $n" > /tmp/state.new; else echo "BAD $n" > /tmp/state.new; fi; mv /tmp/state.new /tmp/state; sleep 0.1; done`

// memState reads the container's /tmp/state (through its init's root
// when pid > 0, else the bundle's rootfs): the count and whether the
// script's memory checked out.
func (b *bundle) memState(pid int) (int, bool) {
	path := filepath.Join(b.dir, "rootfs", "tmp", "state")
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/root/tmp/state", pid)
	}
	data, _ := os.ReadFile(path)
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return 0, true
	}
	n, _ := strconv.Atoi(f[1])
	if f[0] != "ok" {
		b.t.Fatalf("container %s: the script's memory changed: %q", b.id, data)
	}
	return n, true
}

// waitMemState waits until the script's count passes n (checked ok).
func (b *bundle) waitMemState(pid, n int) int {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, _ := b.memState(pid); c > n {
			return c
		}
		if time.Now().After(deadline) {
			c, _ := b.memState(pid)
			b.t.Fatalf("container %s: state count stuck at %d (want more than %d)", b.id, c, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// statsLines returns the JSON objects ctr-cr printed (--print-stats).
func statsLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var res []map[string]any
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("stats line %q: %v", l, err)
		}
		res = append(res, m)
	}
	return res
}

// num reads a number at a dotted path of a stats object (0 if absent).
func num(m map[string]any, path string) float64 {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return 0
		}
		v = mm[k]
	}
	f, _ := v.(float64)
	return f
}

// TestCheckpoint_PreCopy: two `checkpoint --pre-dump` rounds of a running
// container (it runs on, its count going up between them), then the final
// `checkpoint --parent-path` writing only the pages written since (most
// come from the parent), the restore from the tip: the script's memory
// checks out and its count goes on from where it was. A pre-dump round by
// itself is refused by restore, naming it.
func TestCheckpoint_PreCopy(t *testing.T) { forRuntimes(t, testCheckpointPreCopy) }

func testCheckpointPreCopy(t *testing.T, rt string) {
	b := newBundle(t, rt, memoryScript)
	b.start()
	n := b.waitMemState(0, 2)
	imgs := t.TempDir()
	pid := b.pidOf()
	for k, parent := range []string{"", "../r1"} {
		args := []string{"checkpoint", "--pre-dump", "--print-stats", "--image-path", filepath.Join(imgs, fmt.Sprintf("r%d", k+1))}
		if parent != "" {
			args = append(args, "--parent-path", parent)
		}
		out, err := ctrcr(t, append(args, b.id)...)
		if err != nil {
			t.Fatalf("pre-dump round %d: %v\n%s", k+1, err, out)
		}
		st := statsLines(t, out)
		if len(st) != 1 || num(st[0], "pages_written") == 0 {
			t.Fatalf("pre-dump round %d: stats %v\n%s", k+1, st, out)
		}
		if k == 1 && num(st[0], "pages_from_parent") == 0 {
			t.Errorf("pre-dump round 2 took nothing from round 1: %v", st[0])
		}
		if b.pidOf() != pid {
			t.Fatalf("pre-dump round %d: the container's init changed", k+1)
		}
		n = b.waitMemState(0, n+2) // it runs on, its memory as it was
	}
	out, err := ctrcr(t, "restore", "-d", "--image-path", filepath.Join(imgs, "r1"), b.dir)
	if err == nil || !strings.Contains(out, "pre-dump round") {
		t.Fatalf("restore of a pre-dump round: %v\n%s", err, out)
	}
	out, err = ctrcr(t, "checkpoint", "--parent-path", "../r2", "--print-stats", "--image-path", filepath.Join(imgs, "r3"), b.id)
	if err != nil {
		t.Fatalf("final checkpoint: %v\n%s", err, out)
	}
	st := statsLines(t, out)
	if len(st) != 1 || num(st[0], "dump.pages_from_parent") == 0 {
		t.Fatalf("final checkpoint: stats %v\n%s", st, out)
	}
	t.Logf("final: %v pages written, %v from the parents, frozen %v ms", num(st[0], "dump.pages_written"), num(st[0], "dump.pages_from_parent"), num(st[0], "frozen_ms"))
	if err := waitGone(pid, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	at, _ := b.memState(0)
	if out, err := ctrcr(t, "restore", "-d", "--image-path", filepath.Join(imgs, "r3"), b.dir); err != nil {
		t.Fatalf("restore from the tip: %v\n%s", err, out)
	}
	if got := b.waitMemState(0, at); got > at+20 {
		t.Errorf("count after the restore %d, was %d at the checkpoint: not going on from there", got, at)
	}
	b.waitMemState(0, at+3)
}

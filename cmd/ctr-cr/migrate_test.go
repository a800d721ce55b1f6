package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRestoreOutput: a plain error passes whole; a crash keeps its header
// and first frames, the rest goes to DIR/restore.log.
func TestRestoreOutput(t *testing.T) {
	dir := t.TempDir()
	if got := restoreOutput(dir, []byte("Error: restore: pid 7: files: boom\n")); got != "Error: restore: pid 7: files: boom" {
		t.Errorf("plain error: %q", got)
	}
	var b strings.Builder
	b.WriteString("panic: runtime error: index out of range [3] with length 3\n\ngoroutine 1 [running]:\n")
	for i := 0; i < 200; i++ {
		b.WriteString("main.frame()\n\t/src/x.go:1 +0x1\n")
	}
	got := restoreOutput(dir, []byte(b.String()))
	if !strings.HasPrefix(got, "panic: runtime error: index out of range") || !strings.Contains(got, "goroutine 1 [running]:") || len(got) > 1000 {
		t.Errorf("crash output not cut to its head (%d bytes):\n%s", len(got), got)
	}
	if full, err := os.ReadFile(filepath.Join(dir, "restore.log")); err != nil || string(full) != b.String() {
		t.Errorf("restore.log: %v (%d bytes)", err, len(full))
	}
}

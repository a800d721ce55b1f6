package image

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// TestOpenPty: an image with a valid pty pair opens; hostile pty entries
// are refused by Open with an error naming files.img, never a panic; so
// are a container's console entries (FILE_CONSOLE).
func TestOpenPty(t *testing.T) {
	good := func() []*imagepb.FileEntry {
		return []*imagepb.FileEntry{
			{Id: 3, Kind: imagepb.FileKind_FILE_PTY, Path: "/dev/ptmx", Pty: &imagepb.Pty{Index: 4, Master: true,
				Termios: &imagepb.PtyTermios{Cc: make([]byte, 19)}, Winsize: &imagepb.PtyWinsize{Rows: 24, Cols: 80},
				Input: []byte("in"), Output: []byte("out"), Sid: 10, FgPgid: 12}},
			{Id: 4, Kind: imagepb.FileKind_FILE_PTY, Path: "/dev/pts/4", Pty: &imagepb.Pty{Index: 4}},
		}
	}
	// a container's console: a slave whose master is outside
	console := func() *imagepb.FileEntry {
		return &imagepb.FileEntry{Id: 5, Kind: imagepb.FileKind_FILE_CONSOLE, Path: "/dev/pts/0", Pty: &imagepb.Pty{Index: 0,
			Termios: &imagepb.PtyTermios{Cc: make([]byte, 19)}, Winsize: &imagepb.PtyWinsize{Rows: 24, Cols: 80}, Sid: 10}}
	}
	cases := []struct {
		name string
		edit func(fs []*imagepb.FileEntry) []*imagepb.FileEntry
		want string // "" means Open succeeds
	}{
		{"valid pair", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry { return fs }, ""},
		{"no description", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry { fs[1].Pty = nil; return fs }, "without its description"},
		{"description on another kind", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry {
			fs[1].Kind = imagepb.FileKind_FILE_CHR
			return fs
		}, "has a pty description"},
		{"index out of range", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry { fs[1].Pty.Index = 1 << 30; return fs }, "out of range"},
		{"slave without master", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry { return fs[1:] }, "whose master is not in files.img"},
		{"two masters", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry {
			fs[1].Pty = fs[0].Pty
			return fs
		}, "a second master"},
		{"no termios", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry { fs[0].Pty.Termios = nil; return fs }, "without termios"},
		{"long c_cc", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry {
			fs[0].Pty.Termios.Cc = make([]byte, 4096)
			return fs
		}, "control characters"},
		{"huge queue", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry {
			fs[0].Pty.Input = make([]byte, maxPtyQueue+1)
			return fs
		}, "queued data"},
		{"negative session", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry { fs[0].Pty.Sid = -1; return fs }, "session -1"},
		{"group without session", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry { fs[0].Pty.Sid = 0; return fs }, "session 0"},
		{"window too large", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry { fs[0].Pty.Winsize.Cols = 1 << 17; return fs }, "window size"},
		{"session not in the tree", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry { fs[0].Pty.Sid = 99; return fs }, "pty session 99"},
		{"console", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry { return append(fs, console()) }, ""},
		{"console without termios", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry {
			c := console()
			c.Pty.Termios = nil
			return append(fs, c)
		}, "without termios"},
		{"console master", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry {
			c := console()
			c.Pty.Master = true
			return append(fs, c)
		}, "console file 5: master"},
		{"console with queued output", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry {
			c := console()
			c.Pty.Output = []byte("x")
			return append(fs, c)
		}, "queued output"},
		{"console with too much input", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry {
			c := console()
			c.Pty.Input = make([]byte, maxPtyQueue+1)
			return append(fs, c)
		}, "queued data"},
		{"console session not in the tree", func(fs []*imagepb.FileEntry) []*imagepb.FileEntry {
			c := console()
			c.Pty.Sid = 99
			return append(fs, c)
		}, "pty session 99"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSample()
			s.files = append(s.files, c.edit(good())...)
			dir := filepath.Join(t.TempDir(), "img")
			s.write(t, dir)
			_, err := Open(dir)
			if c.want == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				return
			}
			var ie *Error
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "files.img") || !errors.As(err, &ie) {
				t.Fatalf("Open: %v, want an image error on files.img with %q", err, c.want)
			}
		})
	}
}

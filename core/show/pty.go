package show

import (
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// cttys maps a session to the pty of the image that is its controlling
// terminal.
func cttys(files []*imagepb.FileEntry) map[int32]uint32 {
	out := map[int32]uint32{}
	for _, f := range files {
		if (f.Kind == imagepb.FileKind_FILE_PTY && f.Pty != nil && f.Pty.Master || f.Kind == imagepb.FileKind_FILE_CONSOLE && f.Pty != nil) && f.Pty.Sid != 0 {
			out[f.Pty.Sid] = f.Pty.Index
		}
	}
	return out
}

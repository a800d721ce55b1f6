package tests

import (
	"strings"
	"testing"
)

// TestCR_Fanotify: two fanotify groups (notification class, one reporting
// file ids) with inode marks on a file and a directory (events on
// children, ignore masks), a mount mark and a file system mark; after two
// cycles the case finds its fdinfo lines as before and the events it
// causes on the restored fds. show lists the marks.
func TestCR_Fanotify(t *testing.T) {
	runCase(t, Case{Name: "Fanotify", Src: "e_fanotify.c", Verify: func(t *testing.T, r *Run) {
		if noCR {
			return
		}
		out, stderr, err := ctrcr(t, "show", r.Images[0])
		if err != nil {
			t.Fatalf("show: %v\n%s", err, stderr)
		}
		for _, want := range []string{"fanotify", "4 mark(s)", "mount /proc mask 0x1000", r.Dir + "/fan/f mask 0x0 ignored 0x2 mflags 0x400"} {
			if !strings.Contains(out, want) {
				t.Errorf("show %s lacks %q:\n%s", r.Images[0], want, out)
			}
		}
	}})
}

// TestNegative_FanotifyQueued: a fanotify group with an event queued is
// refused by name (events are not carried); the event is still there.
func TestNegative_FanotifyQueued(t *testing.T) {
	refusedCase(t, "g_fanotify_queued", "fanotify group with events queued")
}

// TestNegative_FanotifyPermission: a fanotify group of a permission class
// is refused by name (a permission event being answered shows nowhere).
func TestNegative_FanotifyPermission(t *testing.T) {
	refusedCase(t, "g_fanotify_perm", "fanotify group of a permission class")
}

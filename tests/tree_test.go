package tests

// Process-tree C/R cases (tests/cases/t_*.c), run by runTree
// (tree_harness_test.go).

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// ---------------------------------------------------------------------------
// The C cases.

// TestTree_ThreeLevels: three levels, two sessions, four groups; ids,
// parent-death signals, memory and counters of every member kept; the
// groups are signalled as groups after restore; exit statuses reaped.
func TestTree_ThreeLevels(t *testing.T) {
	runTree(t, Case{Name: "t_tree3", Src: "t_tree3.c"})
}

// TestTree_OrphanSession: a session (and a group) whose leader has exited:
// its members keep sid/pgid = the dead leader's pid, which still names no
// process after restore; the root keeps PR_SET_CHILD_SUBREAPER.
func TestTree_OrphanSession(t *testing.T) {
	runTree(t, Case{Name: "t_orphan_session", Src: "t_orphan_session.c", Verify: func(t *testing.T, w *Run) {
		y := treeMember(t, w, 0)
		p, err := readTreeProc(y)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.Sid)); err == nil {
			t.Errorf("the dead session leader %d exists after restore (%s)", p.Sid, procState(p.Sid))
		}
	}})
}

// TestTree_Zombies: zombies (one leading its own group, one killed by a
// signal, one the child of a live child) are zombies after restore with
// the same exit codes, and their parents reap them with the same statuses.
func TestTree_Zombies(t *testing.T) {
	runTree(t, Case{Name: "t_zombies", Src: "t_zombies.c"})
}

// TestTree_Stopped: a SIGSTOPped child stays stopped (a group stop, not
// traced) and does not run until SIGCONT.
func TestTree_Stopped(t *testing.T) {
	runTree(t, Case{Name: "t_stopped", Src: "t_stopped.c", Verify: func(t *testing.T, w *Run) {
		s := treeMember(t, w, 0)
		if st := statusField(t, s, "State"); !strings.HasPrefix(st, "T") {
			t.Errorf("stopped child %d: State %q, want T (stopped)", s, st)
		}
		if tr := statusField(t, s, "TracerPid"); tr != "0" {
			t.Errorf("stopped child %d: TracerPid %s", s, tr)
		}
	}})
}

// TestTree_PipeMB: 64 MiB through a 1 MiB pipe between two children, the
// pipe full at every dump; every byte and the checksum checked.
func TestTree_PipeMB(t *testing.T) {
	runTree(t, Case{Name: "t_pipe_mb", Src: "t_pipe_mb.c", Verify: func(t *testing.T, w *Run) {
		// The producer holds the data pipe only; the consumer holds it
		// and its report pipe to the root.
		p, c := treeMember(t, w, 0), treeMember(t, w, 1)
		pp, cp := targetsMatching(t, p, "pipe:"), targetsMatching(t, c, "pipe:")
		if len(pp) != 1 || len(cp) != 2 || !slices.Contains(cp, pp[0]) {
			t.Fatalf("producer and consumer do not hold one pipe: %v / %v", pp, cp)
		}
		if rp := targetsMatching(t, w.Pid, pp[0]); len(rp) > 0 {
			t.Errorf("the root holds the data pipe %s, it had closed it", pp[0])
		}
	}})
}

// TestTree_FIFO: a FIFO opened by path by a writer and a reader, bytes
// queued at dump; the reader gets exactly them, then the new ones, then EOF.
func TestTree_FIFO(t *testing.T) {
	runTree(t, Case{Name: "t_fifo", Src: "t_fifo.c", Verify: func(t *testing.T, w *Run) {
		fifo := filepath.Join(w.Dir, "fifo")
		for i := 0; i < 2; i++ {
			pid := treeMember(t, w, i)
			if got := targetsMatching(t, pid, fifo); len(got) != 1 {
				t.Errorf("pid %d holds %d fds of %s, want 1", pid, len(got), fifo)
			}
		}
	}})
}

// TestTree_Socketpairs: stream, dgram and seqpacket socketpairs between a
// parent and a child with messages queued both ways, buffer sizes and
// SO_PASSCRED kept; new messages flow (with credentials) after restore.
func TestTree_Socketpairs(t *testing.T) {
	runTree(t, Case{Name: "t_socketpairs", Src: "t_socketpairs.c", Verify: func(t *testing.T, w *Run) {
		for _, pid := range []int{w.Pid, treeMember(t, w, 0)} {
			if got := targetsMatching(t, pid, "socket:"); len(got) != 3 {
				t.Errorf("pid %d holds %d sockets, want 3: %v", pid, len(got), got)
			}
		}
	}})
}

// TestTree_SharedOffset: one open file description in two processes: the
// offset stays shared (concurrent writes neither overlap nor get lost).
func TestTree_SharedOffset(t *testing.T) {
	runTree(t, Case{Name: "t_shared_offset", Src: "t_shared_offset.c", Verify: func(t *testing.T, w *Run) {
		path := filepath.Join(w.Dir, "shared.dat")
		var pos []string
		for _, pid := range []int{w.Pid, treeMember(t, w, 0)} {
			for fd, l := range fdTargets(t, pid) {
				if l != path {
					continue
				}
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
				if err != nil {
					t.Fatal(err)
				}
				pos = append(pos, strings.Fields(string(b))[1]) // "pos: N"
			}
		}
		if len(pos) != 2 || pos[0] != pos[1] || pos[0] != "320" {
			t.Errorf("offsets of %s in the two processes: %v, want [320 320]", path, pos)
		}
	}})
}

// TestTree_SharedAnon: MAP_SHARED anonymous memory written by one process
// is read by the other, before and after restore (also pages never touched
// before the dump); MAP_PRIVATE copies stay apart.
func TestTree_SharedAnon(t *testing.T) {
	runTree(t, Case{Name: "t_shared_anon", Src: "t_shared_anon.c", Verify: func(t *testing.T, w *Run) {
		var inos []string
		for _, pid := range []int{w.Pid, treeMember(t, w, 0)} {
			maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range strings.Split(string(maps), "\n") {
				f := strings.Fields(l)
				if len(f) < 6 || !strings.HasPrefix(f[5], "/dev/zero") || f[1][3] != 's' {
					continue
				}
				var lo, hi uint64
				fmt.Sscanf(f[0], "%x-%x", &lo, &hi)
				if hi-lo == 2<<20 {
					inos = append(inos, f[4])
				}
			}
		}
		if len(inos) != 2 || inos[0] != inos[1] {
			t.Errorf("the 2 MiB shared region in the two processes: inodes %v, want one object", inos)
		}
	}})
}

// TestTree_PidNS: the init of a pid namespace and its two children dumped
// as a tree (not the case root, their parent): restored with pids 1, 2, 3
// inside and the same pids outside, one namespace, sessions and groups kept;
// the namespace still forks. The restored init's parent is ctr-cr (or us
// after restore -d), no longer the case root, so the init reports through
// WORKDIR/ns.result, which the case root turns into PASS/FAIL.
func TestTree_PidNS(t *testing.T) {
	tr := startTree(t, Case{Name: "t_pidns", Src: "t_pidns.c"}, treeOpts{rootFile: "dumpme", treeFile: true, exact: true})
	nsInode := func(pid int) string {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	check := func(when string) {
		mine := nsInode(os.Getpid())
		var ns string
		inner := map[string]bool{}
		for i, p := range tr.before {
			nspid := strings.Fields(statusField(t, p.Pid, "NSpid"))
			if len(nspid) != 2 || nspid[0] != strconv.Itoa(p.Pid) || inner[nspid[1]] ||
				(i == 0) != (nspid[1] == "1") || !slices.Contains([]string{"1", "2", "3"}, nspid[1]) {
				t.Errorf("%s: NSpid of %d is %v, want [%d 1] for the init, [%d 2|3] for the others",
					when, p.Pid, nspid, p.Pid, p.Pid)
			}
			if len(nspid) == 2 {
				inner[nspid[1]] = true
			}
			n := nsInode(p.Pid)
			if n == mine || (ns != "" && n != ns) {
				t.Errorf("%s: pid %d is in pid namespace %s (ours %s, the init's %s)", when, p.Pid, n, mine, ns)
			}
			ns = n
		}
	}
	check("before the first dump")
	tr.cycles(t)
	tr.verify(t)
	check("after the last restore")

	tr.finishNsInit()
}

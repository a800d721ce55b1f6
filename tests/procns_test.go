package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// nsDiffers fails the test unless pid lives in another namespace of each
// kind than the test: a restore never puts the tree into the restorer's.
func nsDiffers(t *testing.T, pid int, kinds ...string) {
	t.Helper()
	for _, k := range kinds {
		theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, k))
		if err != nil {
			t.Fatal(err)
		}
		ours, err := os.Readlink("/proc/self/ns/" + k)
		if err != nil {
			t.Fatal(err)
		}
		if theirs == ours {
			t.Fatalf("pid %d was restored into the test's %s namespace (%s)", pid, k, ours)
		}
	}
}

// TestCR_IPCUTSNamespaces: a process in IPC, UTS and cgroup namespaces of
// its own (unshare --ipc --uts --cgroup) is dumped with them; restore
// creates them again (the cgroup one rooted at the restorer's cgroup)
// with the hostname, domainname, SysV shm segments (same ids and key,
// attached where they were, contents), semaphores and queued messages.
func TestCR_IPCUTSNamespaces(t *testing.T) {
	runCase(t, Case{Name: "n_ipcuts", Src: "n_ipcuts.c", Verify: func(t *testing.T, w *Run) {
		nsDiffers(t, w.Pid, "ipc", "uts", "cgroup")
	}})
}

// TestCR_NetNamespace: a process in a network namespace of its own (made
// by itself with unshare(CLONE_NEWNET), unnamed, nobody else in it) is
// dumped with it: restore creates a new one with its links (lo, a dummy
// and a veth pair the test adds from outside, one end with an address), and the listener, an
// established connection (--tcp-established) and a UDP socket come back
// in it.
func TestCR_NetNamespace(t *testing.T) {
	requireTools(t, "ip", "nsenter", "nft")
	runCase(t, Case{Name: "n_net", Src: "n_net.c", DumpArgs: []string{"--tcp-established"},
		BeforeDump: func(t *testing.T, r *Run) {
			ns := fmt.Sprintf("--net=/proc/%d/ns/net", r.Pid)
			if exec.Command("nsenter", ns, "ip", "link", "show", "ctrdummy0").Run() == nil {
				return // restored by the previous cycle
			}
			for _, args := range [][]string{
				{"ip", "link", "add", "ctrdummy0", "type", "veth", "peer", "name", "ctrdummy1"},
				{"ip", "addr", "add", "192.0.2.1/24", "dev", "ctrdummy0"},
				{"ip", "link", "set", "ctrdummy0", "up"},
			} {
				if out, err := exec.Command("nsenter", append([]string{ns}, args...)...).CombinedOutput(); err != nil {
					t.Fatalf("%v: %v: %s", args, err, out)
				}
			}
		},
		Verify: func(t *testing.T, w *Run) {
			nsDiffers(t, w.Pid, "net")
		}})
}

// TestTree_MountPidNS: the init of a pid namespace living in a mount
// namespace of its own with its own root (pivot_root into WORKDIR/rootfs:
// host binds of /usr read-only, /tmp and /dev, a proc of its namespace, a
// tmpfs with files and a bind of a part of it) is dumped with the mount
// tree and the tmpfs contents; restore rebuilds the namespace on --root,
// the external mounts from --ext-mount-map (/dev under the key the dump
// gave it), and the init finds its mounts and files from inside.
func TestTree_MountPidNS(t *testing.T) {
	tr := startTree(t, Case{Name: "t_mntns", Src: "t_mntns.c"}, treeOpts{rootFile: "dumpme"})
	tr.c.DumpArgs = []string{"--ext-mount-map", "/dev:dev"}
	tr.c.RestoreArgs = []string{"--root", filepath.Join(tr.Dir, "rootfs"),
		"--ext-mount-map", "dev:/dev", "--ext-mount-map", "/usr:/usr", "--external", "mnt[/tmp]:/tmp"}
	tr.cycles(t)
	tr.verify(t)
	if !noCR {
		nsDiffers(t, tr.root, "mnt", "pid")
	}
	tr.finishNsInit()
}

// TestReal_PostgresIPC: postgres 15 started in an IPC namespace of its own
// (`unshare --ipc`, as it was reported: its SysV shared memory segment,
// attached by the postmaster and every backend, lives there), listening in
// a network namespace of the test, dumped and restored twice: the IPC
// namespace comes back with the segment, new connections see the table
// written before, write to it, and postgres's checkpointer and background
// workers run on (a CHECKPOINT succeeds).
func TestReal_PostgresIPC(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "psql", "unshare", "setpriv", "nsenter", "ip")
	bin := "/usr/lib/postgresql/15/bin"
	if _, err := os.Stat(bin + "/postgres"); err != nil {
		t.Fatalf("postgres 15 (postgresql) is needed: %v", err)
	}
	dir, err := os.MkdirTemp("", "ctrcr-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	asPg := []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"}
	if out, err := exec.Command("install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", data).CombinedOutput(); err != nil {
		t.Fatalf("install -d: %v: %s", err, out)
	}
	initdb := exec.Command(asPg[0], append(asPg[1:], bin+"/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")...)
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v: %s", err, out)
	}
	ns := testutil.NewNetns(t)
	argv := append([]string{"unshare", "--ipc", "--"}, asPg...)
	argv = append(argv, bin+"/postgres", "-D", data, "-c", "listen_addresses=127.0.0.1", "-c", "port=15432",
		"-c", "unix_socket_directories="+data, "-c", "shared_buffers=16MB", "-c", "max_connections=10")
	srv := startDaemon(t, ns, "postgres", argv...)
	psql := func(sql string) (string, error) {
		a := testutil.InNetns(ns, "psql", "-h", "127.0.0.1", "-p", "15432", "-U", "postgres", "-d", "postgres", "-tA", "-c", sql)
		out, err := exec.Command(a[0], a[1:]...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if out, err := psql("SELECT 'up'"); err == nil && out == "up" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("postgres does not answer: %v: %s\n%s", err, out, tail(srv.out, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/ipc", srv.pid)); l == "" {
		t.Fatal("no ipc namespace")
	}
	nsDiffers(t, srv.pid, "ipc")
	if out, err := psql("CREATE TABLE k AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 10000) g; SELECT count(*) FROM k"); err != nil || !strings.HasSuffix(out, "\n10000") {
		t.Fatalf("setup: %v: %s", err, out)
	}
	// a backend of a finished psql may still be closing its connection
	// (CLOSE_WAIT, which a dump without --tcp-established refuses)
	noBackends := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			busy := false
			for _, p := range descendants(srv.pid) {
				if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); strings.Contains(string(cmd), "127.0.0.1(") {
					busy = true
				}
			}
			// and, with CTRCR_PG_SETTLE, the postmaster's children
			// settled: none starting or ending (a dump seized as a child
			// ended once failed its first injected call, "stop of kind
			// 0": a siginfo read into a moved stack, core/ptrace.Raw; by
			// default the dump does not wait, to keep that case covered)
			kids := func() string {
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", srv.pid, srv.pid))
				return string(b)
			}
			before := kids()
			time.Sleep(pgSettle)
			if !busy && kids() == before {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("a client backend of postgres does not end, or its children do not settle")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for i := 0; i < 2; i++ {
		noBackends()
		srv.cycle(t, i, nil)
		nsDiffers(t, srv.pid, "ipc")
		want := strconv.Itoa(10001 + i)
		if out, err := psql(fmt.Sprintf("INSERT INTO k VALUES (%d, 'cycle'); SELECT count(*) FROM k", 20000+i)); err != nil || out != "INSERT 0 1\n"+want {
			t.Fatalf("cycle %d: %v: %q, want %s\n%s", i, err, out, want, tail(srv.out, 20))
		}
		if out, err := psql("CHECKPOINT; SELECT v FROM k WHERE id = 7"); err != nil || !strings.HasSuffix(out, "8f14e45fceea167a5a36dedd4bea2543") {
			t.Fatalf("cycle %d: %v: %q\n%s", i, err, out, tail(srv.out, 20))
		}
	}
}

// pgSettle is how long TestReal_PostgresIPC waits for the postmaster's
// children to settle before a dump (CTRCR_PG_SETTLE, a duration; none by
// default).
var pgSettle = func() time.Duration {
	d, _ := time.ParseDuration(os.Getenv("CTRCR_PG_SETTLE"))
	return d
}()

// TestTree_PidNSGroups: in a restored pid namespace, a process group and
// a session whose leaders are gone are recreated with their ids inside the
// namespace (recorded from NSpgid/NSsid), and the group can be joined.
func TestTree_PidNSGroups(t *testing.T) {
	tr := startTree(t, Case{Name: "t_pidns_group", Src: "t_pidns_group.c"}, treeOpts{rootFile: "dumpme"})
	tr.cycles(t)
	tr.verify(t)
	tr.finishNsInit()
}

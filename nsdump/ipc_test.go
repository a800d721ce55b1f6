package nsdump

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/ctr-cr/ctr-cr/internal/linux"
	"github.com/ctr-cr/ctr-cr/internal/testutil"
	"github.com/ctr-cr/ctr-cr/internal/threadns"
	"golang.org/x/sys/unix"
)

// newNS starts `sleep` in fresh IPC and UTS namespaces and returns its pid;
// the process (and with it the namespaces and their objects) is killed at
// the end of the test.
func newNS(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sleep in new namespaces: %v", err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return pid
}

func inIPC(t *testing.T, pid int, fn func() error) {
	t.Helper()
	if err := threadns.RunInPath(NSPath(pid, "ipc"), unix.CLONE_NEWIPC, fn); err != nil {
		t.Fatal(err)
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
		if b[i] == 0 {
			b[i] = 1
		}
	}
	return b
}

var page = os.Getpagesize()

// Objects of the populated namespace.
const (
	shmBID  = 5*32768 + 7 // keyed segment with a chosen id
	shmBKey = 0x1234
	semKey  = 0x2345
	msgKey  = 0x3456
)

var testMsgs = []Msg{
	{Type: 1, Data: []byte("hello")},
	{Type: 7, Data: pattern(5000, 3)},
	{Type: 3, Data: []byte{}},
}

// populate fills the IPC namespace of pid with objects and changed sysctls
// from a thread inside it. It returns the detach function of an
// attachment of a segment removed with IPC_RMID (a Removed segment).
func populate(t *testing.T, pid int) (detach func()) {
	t.Helper()
	if err := threadns.RunInPath(NSPath(pid, "uts"), unix.CLONE_NEWUTS, func() error {
		if err := unix.Sethostname([]byte("ctrcr-src")); err != nil {
			return err
		}
		return unix.Setdomainname([]byte("dom.example"))
	}); err != nil {
		t.Fatal(err)
	}
	var removed []byte
	inIPC(t, pid, func() error {
		for f, v := range map[string]string{
			"kernel/msgmax":          "10000",
			"kernel/shmmni":          "1000",
			"kernel/sem":             "250 32000 32 128",
			"fs/mqueue/msg_max":      "20",
			"kernel/shm_rmid_forced": "0",
		} {
			if err := writeSysctl(f, v); err != nil {
				return err
			}
		}
		// Segment A: private, not page-aligned, page 1 a hole.
		a, err := shmGet(ipcPrivate, uint64(3*page+100), ipcCreat|0o600)
		if err != nil {
			return fmt.Errorf("shmget A: %w", err)
		}
		mem, err := linux.ShmAttach(a, 0)
		if err != nil {
			return err
		}
		copy(mem[0:], pattern(page, 1))
		copy(mem[2*page:], pattern(page+100, 9))
		if err := linux.ShmDetach(mem); err != nil {
			return err
		}
		var ds shmidDS
		if _, err := shmCtl(a, ipcStat, unsafe.Pointer(&ds)); err != nil {
			return err
		}
		ds.Perm.UID, ds.Perm.GID = 1000, 1001
		if _, err := shmCtl(a, ipcSet, unsafe.Pointer(&ds)); err != nil {
			return err
		}
		// Segment B: keyed, chosen id, created by uid 1002, locked, a
		// pattern in the middle of 1 MiB.
		if err := writeSysctl("kernel/shm_next_id", strconv.Itoa(shmBID)); err != nil {
			return err
		}
		b, err := asCreator(&IPCPerm{CUID: 1002, CGID: 1003}, func() (int, error) {
			return shmGet(shmBKey, 1<<20, ipcCreat|ipcExcl|0o640)
		})
		if err != nil || b != shmBID {
			return fmt.Errorf("shmget B: id %d: %v", b, err)
		}
		if mem, err = linux.ShmAttach(b, 0); err != nil {
			return err
		}
		copy(mem[512<<10:], pattern(3*page, 5))
		if err := linux.ShmDetach(mem); err != nil {
			return err
		}
		if _, err := shmCtl(b, shmLock, nil); err != nil {
			return fmt.Errorf("SHM_LOCK: %w", err)
		}
		// Segment C: attached by us and removed.
		c, err := shmGet(0x4567, uint64(page), ipcCreat|0o666)
		if err != nil {
			return err
		}
		if removed, err = linux.ShmAttach(c, 0); err != nil {
			return err
		}
		copy(removed, "removed but attached")
		if _, err := shmCtl(c, ipcRmid, nil); err != nil {
			return err
		}
		// Semaphores.
		s, err := semGet(semKey, 4, ipcCreat|0o660)
		if err != nil {
			return fmt.Errorf("semget: %w", err)
		}
		vals := []uint16{1, 0, 32767, 42}
		if _, err := semCtl(s, 0, semSetall, unsafe.Pointer(&vals[0])); err != nil {
			return err
		}
		// Message queues: one with 3 messages and lowered qbytes, one empty.
		q, err := msgGet(msgKey, ipcCreat|0o620)
		if err != nil {
			return fmt.Errorf("msgget: %w", err)
		}
		for _, m := range testMsgs {
			buf := make([]byte, 8+len(m.Data))
			*(*int64)(unsafe.Pointer(&buf[0])) = m.Type
			copy(buf[8:], m.Data)
			if err := msgSnd(q, buf, ipcNowait); err != nil {
				return fmt.Errorf("msgsnd: %w", err)
			}
		}
		var mds msqidDS
		if _, err := msgCtl(q, ipcStat, unsafe.Pointer(&mds)); err != nil {
			return err
		}
		mds.Qbytes = 4000 // below what is queued
		if _, err := msgCtl(q, ipcSet, unsafe.Pointer(&mds)); err != nil {
			return err
		}
		if _, err := msgGet(ipcPrivate, ipcCreat|0o600); err != nil {
			return err
		}
		return nil
	})
	return func() {
		if removed != nil {
			linux.ShmDetach(removed)
			removed = nil
		}
	}
}

// roundTrip passes st through JSON as an image would.
func roundTrip[T any](t *testing.T, st *T) *T {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func findShm(st *IPC, id int) *ShmSegment {
	for i := range st.Shm {
		if st.Shm[i].ID == id {
			return &st.Shm[i]
		}
	}
	return nil
}

func TestIPCDumpRestore(t *testing.T) {
	testutil.RequiresRoot(t)
	src := newNS(t)
	detach := populate(t, src)
	defer detach()

	rssBefore := shmRSS(t, src)
	hostSysctls, err := readIPCSysctls()
	if err != nil {
		t.Fatal(err)
	}
	uts, err := DumpUTS(src)
	if err != nil {
		t.Fatal(err)
	}
	if uts.Hostname != "ctrcr-src" || uts.Domainname != "dom.example" {
		t.Fatalf("uts dump: %+v", uts)
	}
	st, err := DumpIPC(src)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Shm) != 3 || len(st.Sem) != 1 || len(st.Msg) != 2 {
		t.Fatalf("dump: %d shm, %d sem, %d msg; want 3, 1, 2", len(st.Shm), len(st.Sem), len(st.Msg))
	}
	if st.Sysctls.MsgMax != 10000 || st.Sysctls.ShmMni != 1000 || st.Sysctls.Sem != [4]int64{250, 32000, 32, 128} ||
		st.Sysctls.Mqueue == nil || st.Sysctls.Mqueue.MsgMax != 20 {
		t.Fatalf("dumped sysctls: %+v", st.Sysctls)
	}
	b := findShm(st, shmBID)
	if b == nil || b.Key != shmBKey || b.Mode != 0o640 || b.CUID != 1002 || b.CGID != 1003 || !b.Locked || b.Size != 1<<20 {
		t.Fatalf("segment B: %+v", b)
	}
	if len(b.Chunks) != 1 || b.Chunks[0].Offset != 512<<10 || !bytes.Equal(b.Chunks[0].Data, pattern(3*page, 5)) {
		t.Fatalf("segment B chunks: %d", len(b.Chunks))
	}
	var a *ShmSegment
	for i := range st.Shm {
		if st.Shm[i].Key == ipcPrivate && !st.Shm[i].Removed {
			a = &st.Shm[i]
		}
	}
	if a == nil || a.UID != 1000 || a.GID != 1001 || a.Mode != 0o600 || len(a.Chunks) != 2 ||
		a.Chunks[0].Offset != 0 || !bytes.Equal(a.Chunks[0].Data, pattern(page, 1)) ||
		a.Chunks[1].Offset != uint64(2*page) || !bytes.Equal(a.Chunks[1].Data, pattern(page+100, 9)) {
		t.Fatalf("segment A: %+v", a)
	}
	var removedID int
	for _, s := range st.Shm {
		if s.Removed {
			removedID = s.ID
		}
	}
	if removedID == 0 {
		t.Fatal("removed segment not flagged Removed")
	}
	if got := st.Sem[0].Values; !reflect.DeepEqual(got, []uint16{1, 0, 32767, 42}) {
		t.Fatalf("sem values %v", got)
	}
	var q *MsgQueue
	for i := range st.Msg {
		if st.Msg[i].Key == msgKey {
			q = &st.Msg[i]
		}
	}
	if q == nil || q.Qbytes != 4000 || q.Mode != 0o620 || !reflect.DeepEqual(q.Messages, testMsgs) {
		t.Fatalf("queue: %+v", q)
	}

	// The dump allocated no page in the holes of the segments.
	t.Logf("shm resident pages: %d", rssBefore)
	if rss := shmRSS(t, src); rss != rssBefore {
		t.Fatalf("shm resident pages %d before dump, %d after", rssBefore, rss)
	}
	// The dump consumed nothing: a second dump is identical.
	again, err := DumpIPC(src)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st, again) {
		t.Fatal("second dump of the source differs from the first")
	}

	img := roundTrip(t, st)
	utsImg := roundTrip(t, uts)
	for cycle := 0; cycle < 2; cycle++ {
		dst := newNS(t)
		if err := RestoreUTS(NSPath(dst, "uts"), utsImg); err != nil {
			t.Fatal(err)
		}
		if err := RestoreIPC(NSPath(dst, "ipc"), img); err != nil {
			t.Fatal(err)
		}
		u2, err := DumpUTS(dst)
		if err != nil {
			t.Fatal(err)
		}
		if *u2 != *uts {
			t.Fatalf("restored uts %+v, want %+v", u2, uts)
		}
		got, err := DumpIPC(dst)
		if err != nil {
			t.Fatal(err)
		}
		want := roundTrip(t, st)
		for i := range want.Shm {
			want.Shm[i].Nattch = 0
			want.Shm[i].Removed = false // until FinishIPC
		}
		if !sameJSON(t, got, want) {
			t.Fatalf("restored namespace differs:\n got %s\nwant %s", summary(got), summary(want))
		}
		// Next ids are reset and messages really dequeue in order.
		inIPC(t, dst, func() error {
			for _, k := range []string{"shm", "sem", "msg"} {
				if v, err := readSysctl("kernel/" + k + "_next_id"); err != nil || v != "-1" {
					return fmt.Errorf("%s_next_id = %q, %v", k, v, err)
				}
			}
			buf := make([]byte, 8+8192)
			for i, m := range testMsgs {
				n, err := msgRcv(q.ID, buf, 0, ipcNowait)
				if err != nil {
					return fmt.Errorf("msgrcv %d: %w", i, err)
				}
				if typ := *(*int64)(unsafe.Pointer(&buf[0])); typ != m.Type || !bytes.Equal(buf[8:8+n], m.Data) {
					return fmt.Errorf("message %d: type %d, %d bytes", i, typ, n)
				}
			}
			return nil
		})
		if err := FinishIPC(NSPath(dst, "ipc"), img); err != nil {
			t.Fatal(err)
		}
		fin, err := DumpIPC(dst)
		if err != nil {
			t.Fatal(err)
		}
		if len(fin.Shm) != 2 || findShm(fin, removedID) != nil {
			t.Fatalf("after FinishIPC: %d segments", len(fin.Shm))
		}
	}

	// The host namespace was not touched.
	hostAfter, err := readIPCSysctls()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(hostSysctls, hostAfter) || hostAfter.MsgMax == 10000 {
		t.Fatalf("host sysctls changed: %+v -> %+v", hostSysctls, hostAfter)
	}
}

// shmRSS returns the resident shm pages of the IPC namespace of pid
// (shm_info.shm_rss).
func shmRSS(t *testing.T, pid int) uint64 {
	t.Helper()
	var rss uint64
	inIPC(t, pid, func() error {
		var info infoBuf
		if _, err := shmCtl(0, shmInfo, unsafe.Pointer(&info)); err != nil {
			return err
		}
		rss = *(*uint64)(unsafe.Pointer(&info[16])) // after used_ids (padded) and shm_tot
		return nil
	})
	return rss
}

// sameJSON reports whether a and b give the same JSON (as images would).
func sameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ja, jb)
}

// summary describes st with contents replaced by their length and hash.
func summary(st *IPC) string {
	var b strings.Builder
	fmt.Fprintf(&b, "sysctls %+v mqueue %+v\n", st.Sysctls, st.Sysctls.Mqueue)
	h := func(d []byte) string { return fmt.Sprintf("%d:%x", len(d), sha256.Sum256(d)) }
	for _, s := range st.Shm {
		fmt.Fprintf(&b, "shm %+v size %d locked %v removed %v nattch %d", s.IPCPerm, s.Size, s.Locked, s.Removed, s.Nattch)
		for _, c := range s.Chunks {
			fmt.Fprintf(&b, " [%#x %.12s]", c.Offset, h(c.Data))
		}
		b.WriteString("\n")
	}
	for _, s := range st.Sem {
		fmt.Fprintf(&b, "sem %+v %v\n", s.IPCPerm, s.Values)
	}
	for _, q := range st.Msg {
		fmt.Fprintf(&b, "msg %+v qbytes %d", q.IPCPerm, q.Qbytes)
		for _, m := range q.Messages {
			fmt.Fprintf(&b, " [%d %.12s]", m.Type, h(m.Data))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestIPCRestoreTakenFails(t *testing.T) {
	testutil.RequiresRoot(t)
	src := newNS(t)
	detach := populate(t, src)
	defer detach()
	st, err := DumpIPC(src)
	if err != nil {
		t.Fatal(err)
	}
	// Into the source itself: every id and key is taken.
	err = RestoreIPC(NSPath(src, "ipc"), st)
	if err == nil || !strings.Contains(err.Error(), "taken") || !strings.Contains(err.Error(), "shm id ") {
		t.Fatalf("restore over existing objects: %v", err)
	}
	t.Log(err)
	// Only the message queues conflict: shm and sem get created, then
	// removed again.
	dst := newNS(t)
	inIPC(t, dst, func() error {
		if err := writeSysctl("kernel/msg_next_id", strconv.Itoa(st.Msg[len(st.Msg)-1].ID)); err != nil {
			return err
		}
		_, err := msgGet(0x7777, ipcCreat|0o600)
		return err
	})
	before, err := DumpIPC(dst)
	if err != nil {
		t.Fatal(err)
	}
	err = RestoreIPC(NSPath(dst, "ipc"), st)
	if err == nil || !strings.Contains(err.Error(), "is taken") {
		t.Fatalf("restore with a taken msg id: %v", err)
	}
	t.Log(err)
	after, err := DumpIPC(dst)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Shm) != 0 || len(after.Sem) != 0 || !reflect.DeepEqual(before.Msg, after.Msg) {
		t.Fatalf("failed restore left objects: %d shm, %d sem, %d msg", len(after.Shm), len(after.Sem), len(after.Msg))
	}

	// A taken key.
	dst2 := newNS(t)
	inIPC(t, dst2, func() error {
		_, err := semGet(semKey, 1, ipcCreat|0o600)
		return err
	})
	err = RestoreIPC(NSPath(dst2, "ipc"), st)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("sem id %d key %#x: semget: key taken", st.Sem[0].ID, semKey)) {
		t.Fatalf("restore with a taken sem key: %v", err)
	}
	t.Log(err)
	if after, err := DumpIPC(dst2); err != nil || len(after.Shm)+len(after.Msg) != 0 || len(after.Sem) != 1 {
		t.Fatalf("failed restore left objects: %v", err)
	}

	// A hostile image is refused before anything is touched.
	bad := roundTrip(t, st)
	bad.Sem[0].Values[0] = 40000
	dst3 := newNS(t)
	if err := RestoreIPC(NSPath(dst3, "ipc"), bad); err == nil || !strings.Contains(err.Error(), "value 40000") {
		t.Fatalf("restore of a bad image: %v", err)
	}
	if after, err := DumpIPC(dst3); err != nil || len(after.Shm)+len(after.Sem)+len(after.Msg) != 0 || after.Sysctls.MsgMax == 10000 {
		t.Fatalf("refused restore touched the namespace: %v", err)
	}
}

func TestIPCEmptyNamespace(t *testing.T) {
	testutil.RequiresRoot(t)
	src := newNS(t)
	st, err := DumpIPC(src)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Shm)+len(st.Sem)+len(st.Msg) != 0 {
		t.Fatalf("fresh namespace has objects: %+v", st)
	}
	uts, err := DumpUTS(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := newNS(t)
	if err := RestoreIPC(NSPath(dst, "ipc"), roundTrip(t, st)); err != nil {
		t.Fatal(err)
	}
	if err := RestoreUTS(NSPath(dst, "uts"), roundTrip(t, uts)); err != nil {
		t.Fatal(err)
	}
	got, err := DumpIPC(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !sameJSON(t, got, st) {
		t.Fatalf("restored empty namespace: %+v, want %+v", got, st)
	}
}

// TestSysctlFollowsThread checks that /proc/sys/kernel ipc files opened by a
// thread that joined an IPC namespace show that namespace's values.
func TestSysctlFollowsThread(t *testing.T) {
	testutil.RequiresRoot(t)
	ns := newNS(t)
	host, err := readSysctl("kernel/msgmnb")
	if err != nil {
		t.Fatal(err)
	}
	want := "12345"
	if host == want {
		want = "12346"
	}
	inIPC(t, ns, func() error { return writeSysctl("kernel/msgmnb", want) })
	var got string
	inIPC(t, ns, func() error {
		var err error
		got, err = readSysctl("kernel/msgmnb")
		return err
	})
	after, err := readSysctl("kernel/msgmnb")
	if err != nil {
		t.Fatal(err)
	}
	if got != want || after != host {
		t.Fatalf("msgmnb in ns %q (want %q), host %q -> %q", got, want, host, after)
	}
}

func TestRunInNSWrongType(t *testing.T) {
	testutil.RequiresRoot(t)
	ns := newNS(t)
	err := threadns.RunInPath(NSPath(ns, "uts"), unix.CLONE_NEWIPC, func() error { return nil })
	if err == nil {
		t.Fatal("setns of a uts namespace as ipc succeeded")
	}
	if err := threadns.RunInPath("/nonexistent/ns", unix.CLONE_NEWIPC, func() error { return nil }); err == nil {
		t.Fatal("missing namespace file accepted")
	}
}

// TestIPCShmRmidForcedDeferred: shm_rmid_forced=1 is written by FinishIPC,
// not RestoreIPC, so that segments survive until processes attach them.
func TestIPCShmRmidForcedDeferred(t *testing.T) {
	testutil.RequiresRoot(t)
	src := newNS(t)
	var mem []byte
	inIPC(t, src, func() error {
		if err := writeSysctl("kernel/shm_rmid_forced", "1"); err != nil {
			return err
		}
		id, err := shmGet(0x5151, uint64(page), ipcCreat|0o600)
		if err != nil {
			return err
		}
		// Attached by this process: survives the creating thread's exit.
		if mem, err = linux.ShmAttach(id, 0); err != nil {
			return err
		}
		copy(mem, "kept")
		return nil
	})
	defer linux.ShmDetach(mem)
	st, err := DumpIPC(src)
	if err != nil {
		t.Fatal(err)
	}
	if st.Sysctls.ShmRmidForced != 1 || len(st.Shm) != 1 || st.Shm[0].Nattch != 1 {
		t.Fatalf("dump: rmid_forced %d, %d segments", st.Sysctls.ShmRmidForced, len(st.Shm))
	}
	dst := newNS(t)
	if err := RestoreIPC(NSPath(dst, "ipc"), st); err != nil {
		t.Fatal(err)
	}
	got, err := DumpIPC(dst)
	if err != nil {
		t.Fatal(err)
	}
	if got.Sysctls.ShmRmidForced != 0 || len(got.Shm) != 1 || string(got.Shm[0].Chunks[0].Data[:4]) != "kept" {
		t.Fatalf("after RestoreIPC: rmid_forced %d, %d segments", got.Sysctls.ShmRmidForced, len(got.Shm))
	}
	// Nobody attached the segment: the kernel destroys it once its creator
	// (RestoreIPC's thread, which ends asynchronously after returning) is
	// gone; writing shm_rmid_forced again (FinishIPC is idempotent) sweeps
	// the orphans of threads that ended meanwhile.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := FinishIPC(NSPath(dst, "ipc"), st); err != nil {
			t.Fatal(err)
		}
		if got, err = DumpIPC(dst); err != nil {
			t.Fatal(err)
		}
		if got.Sysctls.ShmRmidForced == 1 && len(got.Shm) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after FinishIPC: rmid_forced %d, %d segments", got.Sysctls.ShmRmidForced, len(got.Shm))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestIPCDumpDataLimit(t *testing.T) {
	testutil.RequiresRoot(t)
	src := newNS(t)
	detach := populate(t, src)
	defer detach()
	st, err := DumpIPC(src)
	if err != nil {
		t.Fatal(err)
	}
	defer func(old int64) { ipcDataLimit = old }(ipcDataLimit)
	ipcDataLimit = 10000 // below segment B's 12 KiB of data
	if _, err := DumpIPC(src); err == nil || !strings.Contains(err.Error(), "contents exceed the 10000 bytes limit") {
		t.Fatalf("dump above the limit: %v", err)
	} else {
		t.Log(err)
	}
	if err := st.Validate(); err == nil || !strings.Contains(err.Error(), "exceed 10000") {
		t.Fatalf("Validate above the limit: %v", err)
	}
	// The failed dump left no attachment behind.
	again, err := DumpIPC(src)
	if err == nil {
		t.Fatal("dump succeeded")
	}
	ipcDataLimit = MaxIPCData
	if again, err = DumpIPC(src); err != nil {
		t.Fatal(err)
	}
	for _, s := range again.Shm {
		if want := findShm(st, s.ID); want == nil || s.Nattch != want.Nattch {
			t.Fatalf("shm %s: nattch %d after failed dumps", s.String(), s.Nattch)
		}
	}
}

// TestRunInNSLeavesNoThread: after RunInNS no thread of this process is
// left in the namespace (it died or went back).
func TestRunInNSLeavesNoThread(t *testing.T) {
	testutil.RequiresRoot(t)
	ns := newNS(t)
	target, err := os.Readlink(NSPath(ns, "ipc"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		inIPC(t, ns, func() error {
			cur, err := os.Readlink("/proc/thread-self/ns/ipc")
			if err != nil || cur != target {
				return fmt.Errorf("inside: %s, %v; want %s", cur, err, target)
			}
			return nil
		})
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		if l, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/ipc"); err == nil && l == target {
			t.Errorf("thread %s is still in %s", task.Name(), target)
		}
	}
}

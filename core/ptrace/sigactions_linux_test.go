package ptrace

import (
	"encoding/binary"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSigactionsMatchInjected: the in-tracee loop reads the same actions
// as one injected rt_sigaction per signal, in a shell with a handler, an
// ignored signal and defaults, and the process runs on afterwards.
func TestSigactionsMatchInjected(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	cmd := exec.Command(sh, "-c", `trap "" USR1; trap "echo usr2" USR2; while :; do sleep 0.05; done`)
	withRemote(t, cmd, func(p *Process, r *Remote) {
		acts, ok2, err := r.Sigactions()
		if err != nil {
			t.Error(err)
			return
		}
		handled := 0
		buf := make([]byte, 32)
		for sig := 1; sig <= 64; sig++ {
			ret, err := r.RawCall(0, unix.SYS_RT_SIGACTION, uint64(sig), 0, r.Scratch, 8)
			if err != nil {
				t.Error(err)
				return
			}
			if (ret == 0) != ok2[sig] {
				t.Errorf("signal %d: injected rt_sigaction returned %d, loop ok %v", sig, ret, ok2[sig])
				continue
			}
			if ret != 0 {
				continue
			}
			if err := r.Mem.ReadAt(buf, r.Scratch); err != nil {
				t.Error(err)
				return
			}
			le := binary.LittleEndian
			want := Sigaction{le.Uint64(buf), le.Uint64(buf[8:]), le.Uint64(buf[16:]), le.Uint64(buf[24:])}
			if acts[sig] != want {
				t.Errorf("signal %d: loop read %+v, injected %+v", sig, acts[sig], want)
			}
			if want.Handler > 1 {
				handled++
			}
		}
		if acts[unix.SIGUSR1].Handler != 1 { // SIG_IGN
			t.Errorf("SIGUSR1 handler %#x, want SIG_IGN", acts[unix.SIGUSR1].Handler)
		}
		if handled == 0 {
			t.Error("no signal with a handler: the shell's trap is missing")
		}
	})
	// released: the shell runs on and still answers its trap
	time.Sleep(100 * time.Millisecond)
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/stat"); err != nil || strings.Contains(string(b), ") t ") {
		t.Fatalf("shell not running after release: %s %v", b, err)
	}
}

package ptrace

import (
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// deep calls f with depth more frames of stack below the caller, so that
// the goroutine's stack runs out (and is moved) at every possible point of
// f for some depth.
//
//go:noinline
func deep(depth int, f func()) {
	var pad [40]byte
	if depth > 0 {
		deep(depth-1, f)
		pad[depth%len(pad)]++
		return
	}
	f()
	_ = pad
}

// TestRawStackMove: a request whose result the kernel writes into a local
// of the caller (GETREGS, GETSIGINFO, GETEVENTMSG, GETSIGMASK) gets it even
// when the goroutine's stack is moved (grown) on the way into Raw. Before
// Raw kept such locals on the heap, the kernel wrote into the old copy of
// the stack and the caller read zeros: a syscall stop taken for "kind 0"
// (a dump of postgres failed to map its injection area) and a signal stop
// taken for a stop elsewhere (the thread let go back to its program, the
// dump waiting forever for its stop).
func TestRawStackMove(t *testing.T) {
	testutil.RequiresRoot(t)
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	time.Sleep(50 * time.Millisecond)
	pid := cmd.Process.Pid
	bad := 0
	for depth := 0; depth < 400 && bad == 0; depth++ {
		done := make(chan string)
		go func() {
			runtime.LockOSThread() // the thread ends with the goroutine: detached then
			p, err := SeizeProcess(pid)
			if err != nil {
				done <- err.Error()
				return
			}
			want := p.Threads[0].Regs
			msg := ""
			deep(depth, func() {
				regs, err := GetRegs(pid)
				if err != nil || regs.Rip != want.Rip || regs.Rsp != want.Rsp {
					msg = "GETREGS: wrong registers"
				}
				if !inEventStop(pid) {
					msg = "GETSIGINFO: the seize stop not seen"
				}
			})
			p.Release()
			done <- msg
		}()
		if msg := <-done; msg != "" {
			t.Errorf("depth %d: %s", depth, msg)
			bad++
		}
	}
}

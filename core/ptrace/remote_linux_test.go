package ptrace

import (
	"os/exec"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// withRemote starts cmd (root only), seizes it from a tracer thread,
// prepares injection at its first executable mapping and runs fn there;
// the process is released afterwards and killed when the test ends.
func withRemote(t *testing.T, cmd *exec.Cmd, fn func(p *Process, r *Remote)) {
	t.Helper()
	testutil.RequiresRoot(t)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	time.Sleep(200 * time.Millisecond)
	tr := NewTracer()
	defer tr.Stop()
	tr.Do(func() {
		p, err := SeizeProcess(cmd.Process.Pid)
		if err != nil {
			t.Error(err)
			return
		}
		defer p.Release()
		r, err := NewRemote(p)
		if err != nil {
			t.Error(err)
			return
		}
		defer r.Close()
		fn(p, r)
	})
}

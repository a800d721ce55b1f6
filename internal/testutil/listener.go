package testutil

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// Listener is a ctr-cr server a test started (page-server,
// migrate-receive): the address it printed and the running command.
type Listener struct {
	Addr string
	Cmd  *exec.Cmd
	mu   sync.Mutex
	err  bytes.Buffer
}

// Stderr returns what the server wrote to its standard error so far.
func (l *Listener) Stderr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err.String()
}

func (l *Listener) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err.Write(b)
}

// StartListening starts argv, a server that prints "listening on ADDR" as
// its first line, and returns it once it did. The test's cleanup kills it
// if it still runs, and logs its standard error when the test failed.
func StartListening(t *testing.T, argv ...string) *Listener {
	t.Helper()
	l := &Listener{Cmd: exec.Command(argv[0], argv[1:]...)}
	l.Cmd.Stderr = l
	out, err := l.Cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l.Cmd.ProcessState == nil {
			l.Cmd.Process.Kill()
			l.Cmd.Wait()
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", strings.Join(argv, " "), l.Stderr())
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if err != nil || !ok {
		t.Fatalf("%s: first line %q, %v; stderr %s", strings.Join(argv, " "), line, err, l.Stderr())
	}
	l.Addr = addr
	return l
}

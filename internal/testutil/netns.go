package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
)

var netnsSeq atomic.Int32

// NewNetns creates a named network namespace with its loopback up
// (ip netns add) and returns its path under /run/netns. It is deleted when
// the test ends; tests run their network processes in it (nsenter --net)
// and never touch the host's interfaces, routes or firewall.
func NewNetns(t testing.TB) string {
	t.Helper()
	RequiresRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("network namespace: the ip program (iproute2) is needed: %v", err)
	}
	name := fmt.Sprintf("ctrcr-test-%d-%d", os.Getpid(), netnsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s link set lo up: %v: %s", name, err, out)
	}
	return "/run/netns/" + name
}

// InNetns returns argv prefixed to run in the network namespace at path
// ("" leaves argv as it is). nsenter execs argv: the pid stays the same.
func InNetns(path string, argv ...string) []string {
	if path == "" {
		return argv
	}
	return append([]string{"nsenter", "--net=" + path, "--"}, argv...)
}

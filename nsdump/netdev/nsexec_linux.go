package netdev

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/threadns"
)

// isOpen tells a usable netns handle: netns.None() (-1) and the zero value
// (fd 0, an options struct left empty) are not.
func isOpen(h netns.NsHandle) bool { return h > 0 }

// readSysctls reads the given keys under /proc/sys/net inside ns. Keys the
// kernel does not have (e.g. ipv6 disabled) are left out.
func readSysctls(ns netns.NsHandle, keys []string) (map[string]string, error) {
	out := map[string]string{}
	err := threadns.RunIn(int(ns), unix.CLONE_NEWNET, func() error {
		for _, k := range keys {
			b, err := os.ReadFile(filepath.Join("/proc/sys/net", k))
			if err != nil {
				if os.IsNotExist(err) {
					continue
				}
				return fmt.Errorf("sysctl net/%s: %w", k, err)
			}
			out[k] = strings.TrimRight(string(b), "\n")
		}
		return nil
	})
	return out, err
}

// writeSysctls writes m under /proc/sys/net inside ns, in sysctlOrder, each
// key only when its current value differs. A key this kernel does not have
// (another kernel, ipv6 disabled) is skipped with a note to logf.
func writeSysctls(ns netns.NsHandle, m map[string]string, logf func(string, ...any), check func(key, have, want string) error) error {
	return threadns.RunIn(int(ns), unix.CLONE_NEWNET, func() error {
		for _, k := range sysctlOrder(m) {
			p := filepath.Join("/proc/sys/net", k)
			cur, err := os.ReadFile(p)
			if os.IsNotExist(err) {
				logf("netdev restore: sysctl net/%s does not exist here: %q not restored", k, m[k])
				continue
			}
			if err != nil {
				return fmt.Errorf("sysctl net/%s: %w", k, err)
			}
			if normSysctl(string(cur)) == normSysctl(m[k]) {
				continue
			}
			if check != nil {
				if err := check(k, normSysctl(string(cur)), m[k]); err != nil {
					return fmt.Errorf("sysctl net/%s: %w", k, err)
				}
			}
			if err := os.WriteFile(p, []byte(m[k]), 0); err != nil {
				return fmt.Errorf("sysctl net/%s = %q: %w", k, m[k], err)
			}
		}
		return nil
	})
}

func normSysctl(s string) string { return strings.Join(strings.Fields(s), " ") }

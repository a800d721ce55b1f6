// Package nsdump captures and restores the state of Linux namespaces for
// ctr-cr's container layer. This part covers the UTS namespace (hostname,
// domainname) and the IPC namespace (SysV shared memory, semaphores, message
// queues and the per-namespace ipc sysctls).
//
// Everything here acts on a namespace by entering it with setns(2) on a
// dedicated, locked OS thread that is never handed back to the Go scheduler
// (internal/threadns.RunIn): the thread ends with the work, so no goroutine
// ever runs in a foreign namespace (or with changed credentials) by
// accident. The package never forks processes.
//
// The captured state is plain Go structs with json tags. State read back
// from an image must go through Validate before it is restored.
package nsdump

import (
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// NSPath returns the path of namespace file kind ("ipc", "uts", ...) of
// process pid: /proc/PID/ns/KIND.
func NSPath(pid int, kind string) string {
	return procfs.PidPath(pid, "ns/"+kind)
}

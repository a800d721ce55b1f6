// Package container checkpoints and restores OCI containers managed by a
// runtime (runc, crun). It finds a container through the runtime's own
// `state` command, reads its bundle's config.json (runtime-spec types),
// and composes the engine (core/dump, core/restore) with the namespace
// parts (nsdump: UTS and IPC, nsdump/netdev: links, addresses, routes;
// mounts: the mount tree and tmpfs contents; cgroup: freeze and settings)
// and the OCI hooks.
//
// The flow of `ctr-cr checkpoint ID` (Checkpoint):
//
//	runtime state ID            -> init pid, bundle, status (must be running;
//	                               read from the state directory when it is
//	                               sure, statefile.go)
//	BUNDLE/config.json          -> spec.dump
//	freeze (cgroup), namespaces -> container.json (ipc, uts, net, mounts,
//	                               cgroup: the parts, nsParts), tmpfs-N.tar
//	core dump of the init tree  -> the image (BUNDLE/checkpoint by default),
//	                               written beside it and renamed into place
//	metadata                    -> ctr-cr.json
//	without --leave-running     -> the runtime deletes the stopped container
//
// The flow of `ctr-cr restore ID` (Restore):
//
//	image, spec.dump, ctr-cr.json -> validated against the bundle's
//	                                 config.json (specdiff.go, imagecheck.go)
//	RUNTIME create                -> the sandbox (namespaces, cgroup, rootfs
//	                                 mounts) from a config with the
//	                                 privileges the restore needs (ceiling.go)
//	namespace parts               -> ipc, uts, links, mounts and tmpfs
//	                                 contents, cgroup settings, before any
//	                                 task runs (nsParts)
//	core restore                  -> the tree, with the runtime's init
//	                                 adopted as its root
//	created -> running            -> done as the runtime's init would; a
//	                                 failed restore deletes the container
//
// Each part of the container's state beyond the process image (the
// state of one of its own namespaces, its cgroup's settings) is one part
// (parts.go): capture, validate, restore with its undo; Checkpoint and
// Restore run the table nsParts in its order, which parts.go writes down
// with the engine's steps around it, and time each part.
//
// A failed checkpoint leaves the container running as it was; a failed
// restore leaves no container behind.
package container

// Package mounts captures and restores a container's mount tree.
//
// At checkpoint the tree is read from /proc/PID/mountinfo (internal/mountinfo, ReadTree):
// mount points are relative to the process's root, mounts are ordered
// parents first, and each mount is classified (Kind): the root mount, external
// mounts (bind mounts named by config.json, and rootfs-like filesystems) keyed
// by their destination, bind mounts of another mount of the tree, tmpfs whose
// contents are saved (SaveTmpfs), and pseudo filesystems (proc, sysfs, devpts,
// mqueue, cgroup, cgroup2) recreated by type with their options. Anything else
// is refused with ErrUnsupportedFS.
//
// At restore the OCI runtime has already built the container's mount
// namespace from config.json; Apply adds, inside that namespace, the mounts
// the target does not have yet (tmpfs with its contents, pseudo filesystems,
// external and internal bind mounts) and then sets read-only flags and
// propagation parent first.
//
// Everything read from an image is checked (Tree.Validate, RestoreTmpfs)
// before it is used: paths from an image never leave the container's root and
// symlinks inside it are never followed.
package mounts

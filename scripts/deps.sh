#!/usr/bin/env bash
# scripts/deps.sh: THE list of Debian packages `make test`, `make demo` and
# `make bench` need (the bench's criu 4.2 runtime libraries included), and
# their installer. It asks dpkg which of them are missing (one dpkg-query,
# a few ms when all are there) and, as root, apt-get installs only those.
# Not root, or not a dpkg system: it names what is missing and leaves it
# (the root-only tests skip anyway). Used by the Makefile and .ci/run.
set -euo pipefail

PACKAGES=(
	# building and running the C/R cases
	gcc libc6-dev binutils make python3 gzip tar util-linux
	# keys made by openssl read by the image signing tests
	openssl
	# container tests and demo
	runc crun busybox-static
	# platform tests: ctr-cr as the runtime of podman (with conmon) and containerd
	podman conmon containerd containernetworking-plugins
	# LXC, checkpointed by lxc-checkpoint with ctr-cr as its criu
	lxc
	# network tests: namespaces, addresses, the TCP network lock
	iproute2 nftables
	# real programs checkpointed by the tests
	redis-server redis-tools tmux openssh-server openssh-client mariadb-server mariadb-client
	default-jdk-headless postgresql
	# criu 4.2's runtime libraries, for the bench's comparison runs
	libprotobuf-c1 libnl-3-200 libnet1 libnftables1 libbsd0 libgnutls30 libuuid1
)

# missing prints the packages of PACKAGES that dpkg does not have installed.
missing() {
	local have
	have=$(dpkg-query -W -f='${db:Status-Status} ${Package}\n' "${PACKAGES[@]}" 2>/dev/null |
		awk '$1 == "installed" { print $2 }' || true) # exits 1 when one is unknown
	local p
	for p in "${PACKAGES[@]}"; do
		grep -qxF -- "$p" <<<"$have" || echo "$p"
	done
}

if [ "${1:-}" = "--list" ]; then
	printf '%s\n' "${PACKAGES[@]}"
	exit 0
fi
if ! command -v dpkg-query >/dev/null; then
	echo "deps: no dpkg-query (not Debian?); install by hand: ${PACKAGES[*]}" >&2
	exit 0
fi
mapfile -t need < <(missing)
[ "${#need[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "deps: not root, not installing missing packages: ${need[*]}" >&2
	exit 0
fi
echo "deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

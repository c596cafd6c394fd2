#!/usr/bin/env bash
# Build (once) the local Debian image the molecule scenarios run in (and the k8s lab builds the
# driver image on). No container registry
# is reachable here, so the image is bootstrapped from the Debian mirror with debootstrap
# and imported into podman. The tag carries a hash of the package list and recipe: changing
# them rebuilds it, else the cached image is reused (a second run takes ~1 s).
#   scripts/build-image.sh            print the image name, building it if missing
#   scripts/build-image.sh --force    rebuild (what CI=true does once per test run: a fresh machine has no image)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/extensions/molecule/containers.conf}"
SUITE="${ZBS_IMAGE_SUITE:-bookworm}"
MIRROR="${ZBS_IMAGE_MIRROR:-http://deb.debian.org/debian}"
# What a Kubernetes node image of ours carries: systemd as PID 1 (so the roles manage real
# services), python3 for Ansible, and the iSCSI/multipath/filesystem tools the zbs_node role
# installs, pre-baked so converge does not depend on the mirror.
PACKAGES=(
  python3 python3-apt systemd systemd-sysv dbus udev kmod iproute2 procps ca-certificates
  open-iscsi multipath-tools xfsprogs e2fsprogs sg3-utils sudo
)
# Bump RECIPE when the build steps below change; the tag then changes and the image is rebuilt.
RECIPE=1
hash="$(printf '%s\n' "$RECIPE" "$SUITE" "${PACKAGES[@]}" | sha256sum | cut -c1-12)"
IMAGE="localhost/smartx-zbs-node:${SUITE}-${hash}"
log() { printf '[build-image] %s\n' "$*" >&2; }

# Under CI=true it is rebuilt once per test run: scripts/test.sh gives the run a directory
# (ZBS_IMAGE_RUN_DIR) where the build leaves a stamp, so the run's later stages reuse it.
stamp="${ZBS_IMAGE_RUN_DIR:+$ZBS_IMAGE_RUN_DIR/image-built-${IMAGE##*:}}"
built_this_run() { [ -n "$stamp" ] && [ -f "$stamp" ]; }
if [ "${1:-}" != "--force" ] && { [ "${CI:-}" != true ] || built_this_run; } && podman image exists "$IMAGE"; then
  echo "$IMAGE"; exit 0
fi
[ "$(id -u)" -eq 0 ] || { log "debootstrap needs root"; exit 1; }
work="$(mktemp -d /tmp/zbs-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT
log "debootstrap $SUITE (minbase) into $work/root"
include="$(IFS=,; echo "${PACKAGES[*]}")"
debootstrap --variant=minbase --include="$include" "$SUITE" "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
  { tail -30 "$work/debootstrap.log" >&2; exit 1; }
# A container is not a machine: drop units that cannot work in one and would only fail.
for unit in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
  getty@tty1.service systemd-remount-fs.service systemd-logind.service; do
  ln -sfn /dev/null "$work/root/etc/systemd/system/$unit"
done
rm -f "$work/root/etc/iscsi/initiatorname.iscsi" # cloned images must not share an IQN
: >"$work/root/etc/machine-id"
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
log "importing $IMAGE"
tar -C "$work/root" -c . | podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$IMAGE" >/dev/null
# Drop images an older version of this script built (none on a first run; one still in use stays).
mapfile -t older < <(podman images --format '{{.Repository}}:{{.Tag}}' | grep -F "localhost/smartx-zbs-node:${SUITE}-" | grep -vxF "$IMAGE" || true)
for old in "${older[@]}"; do podman rmi "$old" >/dev/null 2>&1 || true; done
if [ -n "$stamp" ]; then touch "$stamp"; fi
echo "$IMAGE"

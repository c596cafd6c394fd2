#!/usr/bin/env bash
# Build (once) the Kubernetes node VM image the `vm` stage boots with qemu: Debian bookworm
# with its stock kernel (linux-image-amd64), open-iscsi, multipath-tools, the filesystem
# tools, python3 (for Ansible and the node plugin) and the userspace connector's tools (for
# the side-by-side benchmark). The kernel iSCSI initiator is not in this machine's kernel, so
# the kernel connector can only be proven inside such a VM.
#
# The image is a directory under .cache/vm/ named by a hash of this script: changing the
# recipe or the package list rebuilds it, else the cached one is reused (a second run takes
# ~0 s). Under CI=true it is always rebuilt (the fresh-machine rule) and no .deb cache is used.
#   scripts/build-vm-image.sh           print the image directory, building it if missing
#   scripts/build-vm-image.sh --force   rebuild
# The directory holds: vmlinuz, initrd.img, rootfs.img (raw ext4; boot it through a qcow2
# overlay, never directly), ssh/id_ed25519 (root's key), build.json (what and how long).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE=bookworm
MIRROR="${ZBS_IMAGE_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=(
  linux-image-amd64 initramfs-tools systemd-sysv udev kmod dbus iproute2 procps openssh-server
  python3 python3-apt
  open-iscsi multipath-tools xfsprogs e2fsprogs sg3-utils
  qemu-system-common qemu-block-extra libiscsi-bin fuse3
)
hash="$(sha256sum <"${BASH_SOURCE[0]}" | cut -c1-12)"
BASE="$ROOT/.cache/vm"
IMAGE="$BASE/image-$SUITE-$hash"
log() { printf '[build-vm-image] %s\n' "$*" >&2; }
# The image directory is the one line on stdout (callers capture it): everything the tools say
# goes to stderr (mkfs.ext4 -d prints "Creating regular file ..." on stdout even with -q).
exec 3>&1 1>&2

mkdir -p "$BASE"
exec 9>"$BASE/build.lock"
flock 9 # one build at a time; a second caller waits and then reuses the result
if [ "${1:-}" != "--force" ] && [ "${CI:-}" != "true" ] && [ -f "$IMAGE/build.json" ]; then
  echo "$IMAGE" >&3
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { log "debootstrap needs root"; exit 1; }
work="$(mktemp -d "$BASE/build.XXXXXX")"
cleanup() {
  # debootstrap leaves /proc and /sys mounted in the rootfs when it fails: unmount before removing.
  findmnt -rn -o TARGET | { grep -F "$work/" || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
rootfs="$work/rootfs"
t0=$SECONDS
cache_args=()
if [ "${CI:-}" != "true" ]; then
  mkdir -p "$BASE/debs"
  cache_args=(--cache-dir="$BASE/debs")
fi
log "debootstrap $SUITE (minbase, ${#PACKAGES[@]} packages) from $MIRROR"
include="$(IFS=,; echo "${PACKAGES[*]}")"
# debootstrap ends with a global sync(1), which blocks for as long as any filesystem on this
# shared host is stuck (seen here: an unmount hanging on a dead FUSE export). Flushing the one
# filesystem that holds the image is all the build needs.
mkdir -p "$work/bin"
printf '#!/bin/sh\nexec /bin/sync --file-system "%s"\n' "$work" >"$work/bin/sync"
chmod 0755 "$work/bin/sync"
PATH="$work/bin:$PATH" debootstrap --variant=minbase "${cache_args[@]}" --include="$include" "$SUITE" "$rootfs" \
  "$MIRROR" >"$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
t1=$SECONDS

# --- configure: a node that boots fast, is reached by ssh key, and takes its identity from
# the kernel command line (zbsvm.ip=ADDR/PREFIX), so one image serves every node VM.
cat >"$rootfs/etc/fstab" <<'EOF'
/dev/vda / ext4 rw,relatime 0 1
EOF
chroot "$rootfs" passwd -d root >/dev/null
mkdir -p "$work/ssh" "$rootfs/root/.ssh"
ssh-keygen -q -t ed25519 -N '' -C zbs-vm -f "$work/ssh/id_ed25519"
install -m 0600 "$work/ssh/id_ed25519.pub" "$rootfs/root/.ssh/authorized_keys"
chmod 700 "$rootfs/root/.ssh"
printf 'UseDNS no\nPasswordAuthentication no\n' >"$rootfs/etc/ssh/sshd_config.d/zbs-vm.conf"
cat >"$rootfs/usr/local/sbin/zbsvm-net" <<'EOF'
#!/bin/sh
# Network settings from the kernel command line: zbsvm.ip=ADDR/PREFIX on the first NIC.
set -eu
addr=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^zbsvm\.ip=//p')
[ -n "$addr" ] || exit 0
mkdir -p /run/systemd/network
printf '[Match]\nName=eth0\n[Network]\nAddress=%s\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' "$addr" \
  >/run/systemd/network/10-zbsvm.network
EOF
chmod 0755 "$rootfs/usr/local/sbin/zbsvm-net"
cat >"$rootfs/etc/systemd/system/zbsvm-net.service" <<'EOF'
[Unit]
Description=Network address from the kernel command line
DefaultDependencies=no
Before=systemd-networkd.service network-pre.target
Wants=network-pre.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/zbsvm-net
[Install]
WantedBy=sysinit.target
EOF
chroot "$rootfs" systemctl enable zbsvm-net.service systemd-networkd.service >/dev/null 2>&1
# Nothing a test node needs, everything that costs boot time under software emulation.
chroot "$rootfs" systemctl mask systemd-networkd-wait-online.service apt-daily.timer \
  apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer getty@tty1.service >/dev/null 2>&1 || true
# Cloned nodes must not share an initiator name or a machine id: open-iscsi's iscsi-init
# generates the name at first boot, systemd the machine id.
rm -f "$rootfs/etc/iscsi/initiatorname.iscsi"
: >"$rootfs/etc/machine-id"
printf 'virtio_pci\nvirtio_blk\nvirtio_net\n' >>"$rootfs/etc/initramfs-tools/modules"
chroot "$rootfs" update-initramfs -u -k all >/dev/null 2>&1
chroot "$rootfs" apt-get clean
rm -rf "$rootfs/var/lib/apt/lists/"*
t2=$SECONDS

out="$work/image"
mkdir -p "$out"
kernel="$(find "$rootfs/boot" -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -1)"
cp "$rootfs/boot/$kernel" "$out/vmlinuz"
cp "$rootfs/boot/initrd.img-${kernel#vmlinuz-}" "$out/initrd.img"
mkfs.ext4 -q -F -L zbsvm -d "$rootfs" "$out/rootfs.img" 3G
mv "$work/ssh" "$out/ssh"
t3=$SECONDS
cat >"$out/build.json" <<EOF
{"suite": "$SUITE", "kernel": "${kernel#vmlinuz-}", "mirror": "$MIRROR", "ci": "${CI:-}",
 "seconds": {"debootstrap": $((t1 - t0)), "configure": $((t2 - t1)), "mkfs": $((t3 - t2)), "total": $((t3 - t0))}}
EOF
rm -rf "$IMAGE"
mv "$out" "$IMAGE"
# Drop images an older version of this script built.
for old in "$BASE"/image-"$SUITE"-*; do
  [ "$old" = "$IMAGE" ] || rm -rf "$old"
done
log "built $IMAGE in $((t3 - t0)) s (debootstrap $((t1 - t0)) s)"
echo "$IMAGE" >&3

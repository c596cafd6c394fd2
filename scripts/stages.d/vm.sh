# shellcheck shell=bash
# Stage vm: the kernel connector (open-iscsi, iscsi_tcp, dm-multipath) on a stock Debian kernel
# in qemu node VMs, against zbs-lite, all inside a network namespace the tests create: node
# lifecycle with and without multipath, the formatting guard, node failure with fencing, chunk
# failure with one and several paths, daemon and plugin restarts, CHAP (one-way and mutual) with
# no secret on any command line (tests/vm). The node image is built once by
# scripts/build-vm-image.sh (always rebuilt under CI=true).
stage_vm() {
  local image
  image="$("$ROOT/scripts/build-vm-image.sh")" || return 1
  ZBS_VM_IMAGE="$image" python -m pytest -p no:cacheprovider --durations=0 "$ROOT/tests/vm"
}
ALL_STAGES+=(vm)

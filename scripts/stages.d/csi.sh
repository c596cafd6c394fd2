# shellcheck shell=bash
# Stage csi_sanity: the official CSI conformance suite (csi-sanity v5.6.0, installed by
# scripts/setup.sh from scripts/go-tools.txt) against zbs-csi on a fresh zbs-lite, with the
# userspace connector (real iSCSI logins, loop devices, mkfs, mounts), CHAP on, for the mount
# and the block access types. Skips and their reasons: tests/driver/csi_sanity_run.py (a skip
# it has no reason for fails the stage).
stage_csi_sanity() {
  [ -x "$ROOT/.cache/bin/csi-sanity" ] || { echo "csi-sanity is not installed (scripts/setup.sh)"; return 1; }
  python "$ROOT/tests/driver/csi_sanity_run.py" --csi-sanity "$ROOT/.cache/bin/csi-sanity"
}
ALL_STAGES+=(csi_sanity)

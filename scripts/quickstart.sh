#!/usr/bin/env bash
# The main job: set everything up, then run playbooks/quickstart.yml on this machine -
# zbs-lite, the modules, the CSI driver (userspace iSCSI) provisioning and mounting a volume,
# a snapshot and a clone, and the Kubernetes manifests for both topologies.
#   ./scripts/quickstart.sh            run (again: converges, reports no changes)
#   ./scripts/quickstart.sh --down     unmount, stop the driver and zbs-lite (data kept)
#   ./scripts/quickstart.sh --purge    as --down, and delete the quickstart data
# ZBS_QUICKSTART_DIR (default .cache/quickstart) and ZBS_QUICKSTART_OUT (default
# quickstart-out/) move its state and its output.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/setup.sh"
export PATH="$ROOT/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.cache/collections"
export ANSIBLE_PYTHON_INTERPRETER="$ROOT/.venv/bin/python"
export ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false
[ "$(id -u)" -eq 0 ] || { echo "the quickstart mounts volumes and needs root" >&2; exit 1; }

case "${1:-}" in
  --down) exec ansible-playbook -i localhost, "$ROOT/playbooks/quickstart_down.yml" ;;
  --purge) exec ansible-playbook -i localhost, "$ROOT/playbooks/quickstart_down.yml" -e qs_purge=true ;;
  "") exec ansible-playbook -i localhost, "$ROOT/playbooks/quickstart.yml" ;;
  *) echo "usage: $0 [--down|--purge]" >&2; exit 2 ;;
esac

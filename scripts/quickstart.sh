#!/usr/bin/env bash
# The main job: set everything up and run the quickstart against a local zbs-lite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
export PATH="$ROOT/.venv/bin:$PATH"
DATA="${ZBS_LITE_DATA_DIR:-$ROOT/.cache/quickstart/zbs-lite}"
mkdir -p "$DATA"
if ! zbs-lite status --data-dir "$DATA" >/dev/null 2>&1; then
  zbs-lite serve --data-dir "$DATA" --daemon
fi
zbs-lite status --data-dir "$DATA"
echo
echo "zbs-lite is running. Point the collection, the driver and your shell at it with:"
echo "  eval \"\$(.venv/bin/zbs-lite env --data-dir $DATA)\""
echo "Stop it with: .venv/bin/zbs-lite stop --data-dir $DATA"

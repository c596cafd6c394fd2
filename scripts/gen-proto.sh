#!/usr/bin/env bash
# Generate the CSI v1.12.0 Python stubs into driver/zbs_csi/proto/ (gitignored).
# The proto comes from the official Go module (never retyped); a stamp of the proto hash and
# the grpcio-tools version keeps a second run a no-op.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SPEC_VERSION="v1.12.0"
OUT="$ROOT/driver/zbs_csi/proto"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || PY=python3

dir="$(GOFLAGS=-mod=mod go mod download -json "github.com/container-storage-interface/spec@$SPEC_VERSION" |
  "$PY" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
proto="$dir/csi.proto"
[ -f "$proto" ] || { echo "gen-proto: $proto not found" >&2; exit 1; }

tools="$("$PY" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))')"
want="$(sha256sum "$proto" | cut -c1-16) $SPEC_VERSION grpcio-tools-$tools"
stamp="$OUT/.stamp"
if [ -f "$OUT/csi_pb2.py" ] && [ -f "$OUT/csi_pb2_grpc.py" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

# Place the proto at zbs_csi/proto/csi.proto so the generated imports are package-qualified.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/zbs_csi/proto"
cp "$proto" "$work/zbs_csi/proto/csi.proto"
"$PY" -m grpc_tools.protoc -I "$work" --python_out="$work" --grpc_python_out="$work" --pyi_out="$work" \
  "$work/zbs_csi/proto/csi.proto"
mkdir -p "$OUT"
cp "$work/zbs_csi/proto/csi_pb2.py" "$work/zbs_csi/proto/csi_pb2_grpc.py" "$work/zbs_csi/proto/csi_pb2.pyi" "$OUT/"
[ -f "$OUT/__init__.py" ] || printf '"""Generated CSI %s stubs (scripts/gen-proto.sh)."""\n' "$SPEC_VERSION" > "$OUT/__init__.py"
echo "$want" > "$stamp"
echo "[gen-proto] generated CSI $SPEC_VERSION stubs in $OUT"

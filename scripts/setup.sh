#!/usr/bin/env bash
# Idempotent set-up of everything the quickstart and the test suite need on a fresh
# Debian/Ubuntu machine: apt packages, the project virtualenv, the collection path,
# generated gRPC stubs and Go tools. A second run only checks and is fast.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
mkdir -p "$CACHE"

log() { printf '[setup] %s\n' "$*"; }

# go_tool_current BIN PKG@VERSION: BIN exists and was built from that package at that version
# (read from the binary's build info), so changing a pin in go-tools.txt reinstalls the tool.
go_tool_current() {
  [ -x "$1" ] || return 1
  [ "$(go version -m "$1" 2>/dev/null | awk '$1 == "path" { p = $2 } $1 == "mod" { v = $3 } END { print p "@" v }')" = "$2" ]
}

# --- apt packages -------------------------------------------------------------------
APT_PACKAGES=(
  python3-venv ca-certificates
  libiscsi-bin qemu-utils qemu-system-common qemu-block-extra fuse3 tgt
  xfsprogs e2fsprogs util-linux fio podman runc debootstrap rsync sqlite3 kmod shellcheck
  # the k8s stage's node (scripts/k8s-lab.sh): container runtime, pod network, workload binary
  containerd containernetworking-plugins busybox-static
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing apt packages (${missing[*]}); run as root or install them"; exit 1
  fi
  log "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # With Recommends: podman needs netavark and catatonit from them, as tested here.
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# qemu for the node VMs of the vm stage: its Recommends are a desktop's worth of GUI libraries.
if ! dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q 'install ok installed'; then
  [ "$(id -u)" -eq 0 ] || { log "missing apt package qemu-system-x86; run as root or install it"; exit 1; }
  log "installing apt package: qemu-system-x86"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
fi

# --- virtualenv -----------------------------------------------------------------------
# Both distributions editable (zbs-lite at the root, zbs-csi in driver/) and the dev group.
stamp="$VENV/.smartx-zbs-stamp"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/driver/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python dependencies (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # the single distribution both were once shipped in
  "$VENV/bin/python" -m pip uninstall -q -y smartx-zbs 2>/dev/null || true
  "$VENV/bin/python" -m pip install -q -e "$ROOT/driver" -e "$ROOT" --group "$ROOT/pyproject.toml:dev"
  echo "$want" > "$stamp"
fi

# --- the collection path: ansible_collections/smartx/zbs -> repository root ------------
COLL="$CACHE/collections/ansible_collections/smartx"
mkdir -p "$COLL"
if [ "$(readlink "$COLL/zbs" 2>/dev/null)" != "$ROOT" ]; then
  ln -sfn "$ROOT" "$COLL/zbs"
fi
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$CACHE/collections" > "$site/smartx_zbs_collections.pth"

# --- ansible-test: a get-pip stand-in (the real one is downloaded from an unreachable host)
"$VENV/bin/python" "$ROOT/scripts/get_pip_standin.py" --install

# --- Go: the pinned toolchain (scripts/go-toolchain.txt) as .cache/bin/go -----------------
# A go of that version on PATH is used; else it is fetched from the Go module proxy into
# .cache/go. Under CI=true it is always fetched, so CI takes a fresh machine's path.
go_args=(--dest "$CACHE/go")
[ "${CI:-}" = true ] && go_args+=(--no-path)
go_bin="$("$PY" "$ROOT/scripts/install_go.py" "${go_args[@]}")"
mkdir -p "$CACHE/bin"
ln -sfn "$go_bin/go" "$CACHE/bin/go"
export PATH="$CACHE/bin:$PATH" GOTOOLCHAIN=local

# --- generated code and Go tools ------------------------------------------------------------
"$ROOT/scripts/gen-proto.sh"
export GOBIN="$CACHE/bin" GOFLAGS=-mod=mod
while read -r bin mod; do
  [ -z "$bin" ] || [ "${bin#\#}" != "$bin" ] && continue
  if ! go_tool_current "$GOBIN/$bin" "$mod"; then log "go install $mod"; go install "$mod"; fi
done < "$ROOT/scripts/go-tools.txt"
log "ready: $VENV, collection at $COLL/zbs"

#!/usr/bin/env bash
# Build the test cluster's binaries from the Go module proxy: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet and kubectl (tests/k8s/go.mod), the CSI
# sidecars and the two stand-ins no proxy serves (tests/k8s/sidecars/go.mod), plus the
# VolumeSnapshot CRDs of the pinned external-snapshotter.
#
#   scripts/k8s-build.sh     print the binary directory, building it when missing
#
# The directory is .cache/k8s/bin/<key>, the key a hash of both modules, our own Go sources and
# the Go version: a second run with the same pins only prints the path. Under CI=true the
# binaries are always rebuilt (Go's build cache keeps that to seconds when warm).
# K8S_BUILD_TIMES=FILE appends per-step wall and CPU seconds (GNU time) to FILE.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MOD="$ROOT/tests/k8s"
log() { printf '[k8s-build] %s\n' "$*" >&2; }

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
export GOFLAGS=-mod=readonly GOTOOLCHAIN=local CGO_ENABLED=0

key="$(cd "$MOD" && { go version; find . -name go.mod -o -name go.sum -o -name '*.go' | LC_ALL=C sort | xargs sha256sum; } |
  sha256sum | cut -c1-16)"
OUT="$ROOT/.cache/k8s/bin/$key"
if [ "${CI:-}" != true ] && [ -f "$OUT/.complete" ]; then echo "$OUT"; exit 0; fi

# version NAME MODULE-DIR MODULE: the version the module's go.mod pins for MODULE
version() { (cd "$1" && go list -m -f '{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}' "$2"); }
K8S="$(version "$MOD" k8s.io/kubernetes)"

# step NAME CMD...: run CMD niced (the machine is shared), optionally timed
step() {
  local name="$1"; shift
  log "$name"
  if [ -n "${K8S_BUILD_TIMES:-}" ]; then
    local t; t="$(mktemp)"
    /usr/bin/time -o "$t" -f '%e %U %S %M' nice -n 10 "$@" || { rm -f "$t"; return 1; }
    read -r wall usr sys rss <"$t"; rm -f "$t"
    printf '%s\t%s\t%s\t%s\n' "$name" "$wall" "$(awk "BEGIN{print $usr+$sys}")" "$((rss / 1024))" >>"$K8S_BUILD_TIMES"
  else
    nice -n 10 "$@"
  fi
}

tmp="$OUT.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp/crds"
trap 'rm -rf "$tmp"' EXIT

# The version strings kube binaries report (hack/lib/version.sh sets the same): kubelet
# registers its node with it and the API server derives its emulation version from it.
minor="${K8S#v1.}"; minor="${minor%%.*}"
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld+=" -X $p.gitVersion=$K8S -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  ld+=" -X $p.buildDate=1970-01-01T00:00:00Z"
done
cd "$MOD"
step download-core go mod download
step kubernetes go build -trimpath -ldflags "$ld" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl
step etcd-pause go build -trimpath -ldflags "-s -w" -o "$tmp/" ./cmd/etcd ./cmd/pause

cd "$MOD/sidecars"
step download-sidecars go mod download
# sidecar BINARY MODULE: one build per binary, each with its own version string
sidecar() {
  local v; v="$(version . "$2")"
  step "$1" go build -trimpath -ldflags "-s -w -X main.version=$v" -o "$tmp/$1" "$2/cmd/$1"
}
sidecar csi-provisioner github.com/kubernetes-csi/external-provisioner/v6
sidecar csi-attacher github.com/kubernetes-csi/external-attacher/v4
sidecar csi-resizer github.com/kubernetes-csi/external-resizer/v2
sidecar csi-snapshotter github.com/kubernetes-csi/external-snapshotter/v8
sidecar snapshot-controller github.com/kubernetes-csi/external-snapshotter/v8
step stand-ins go build -trimpath -ldflags "-s -w" -o "$tmp/" ./cmd/registrar ./cmd/livenessprobe
mv "$tmp/registrar" "$tmp/csi-node-driver-registrar"

# The snapshot CRDs ship in the snapshotter's client module; v8.7's snapshot-controller also
# waits for the VolumeGroupSnapshot ones.
crd="$(go list -m -f '{{.Dir}}' github.com/kubernetes-csi/external-snapshotter/client/v8)/config/crd"
install -m 0644 "$crd"/*snapshot.storage.k8s.io_*.yaml "$tmp/crds/"

# What the binaries are, for the images and the docs.
{
  echo "kubernetes=$K8S"
  echo "etcd=$(version "$MOD" go.etcd.io/etcd/server/v3)"
  for m in external-provisioner/v6 external-attacher/v4 external-resizer/v2 external-snapshotter/v8; do
    echo "${m%%/*}=$(version . "github.com/kubernetes-csi/$m")"
  done
} >"$tmp/versions"
touch "$tmp/.complete"
rm -rf "$OUT"; mv "$tmp" "$OUT"; trap - EXIT
# Keep only this build: an old key's binaries are never used again.
find "$ROOT/.cache/k8s/bin" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
log "binaries in $OUT"
echo "$OUT"

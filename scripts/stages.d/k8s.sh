# shellcheck shell=bash
# Stage k8s: a real one-node Kubernetes (scripts/k8s-lab.sh: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, containerd, kubelet, all built from pinned sources by
# scripts/k8s-build.sh) with the driver installed by the smartx.zbs.zbs_csi role as real pods,
# and the scenarios of tests/k8s run through Kubernetes objects. The lab gets a fresh directory
# and is torn down afterwards, whatever happened; its logs are printed when something failed.
stage_k8s() {
  local dir; dir="$(mktemp -d /tmp/zbs-k8s-stage.XXXXXX)"
  local rc=0 t0=$SECONDS
  export K8S_LAB_DIR="$dir"
  if "$ROOT/scripts/k8s-lab.sh" up >"$dir.up.log" 2>&1; then
    echo "k8s: lab up in $((SECONDS - t0))s ($(sed -n 's/.*\[k8s-lab\] up in //p' "$dir.up.log"))"
    python -m pytest -p no:cacheprovider --basetemp "$dir/pytest" tests/k8s || rc=1
  else
    rc=1; tail -60 "$dir.up.log"
  fi
  if [ $rc -ne 0 ] && [ -d "$dir/logs" ]; then
    local f
    for f in "$dir"/logs/*.log; do printf '\n--- %s (last lines)\n' "$f"; tail -25 "$f"; done
    "$ROOT/scripts/k8s-lab.sh" status 2>&1 | tail -30 || true
  fi
  "$ROOT/scripts/k8s-lab.sh" purge >>"$dir.up.log" 2>&1 || { echo "k8s: teardown failed"; tail -20 "$dir.up.log"; rc=1; }
  rm -f "$dir.up.log"
  unset K8S_LAB_DIR
  return $rc
}
ALL_STAGES+=(k8s)

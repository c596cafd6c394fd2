#!/usr/bin/env bash
# A disposable one-node Kubernetes on this machine with the SmartX ZBS CSI driver installed by
# the smartx.zbs.zbs_csi role, backed by a local zbs-lite. Everything runs as plain processes
# and containers of its own (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd, kubelet), in one work directory, with addresses on a bridge of its own.
#
#   scripts/k8s-lab.sh up        build what is missing, start everything, install the driver
#   scripts/k8s-lab.sh install   re-run the role (after changing the driver or the role)
#   scripts/k8s-lab.sh env       print the exports: KUBECONFIG, the ZBS_* of zbs-lite, K8S_LAB_*
#   scripts/k8s-lab.sh status    what runs, the node and the driver's pods
#   scripts/k8s-lab.sh down      stop everything by pid, remove mounts, loop devices, the bridge
#                                (the work directory stays: up resumes the same cluster)
#   scripts/k8s-lab.sh purge     down, then delete the work directory
#
# K8S_LAB_DIR (default .cache/k8s/lab) is the work directory. Needs root, Go, the Debian
# packages scripts/setup.sh installs (containerd, runc, containernetworking-plugins, podman,
# busybox-static) and the project venv. docs/install.md, "Try it in a disposable Kubernetes".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAB="${K8S_LAB_DIR:-$ROOT/.cache/k8s/lab}"
VENV="$ROOT/.venv/bin"
DRIVER=zbs.csi.smartx.com
NODE=zbs-k8s-lab
RUN="$LAB/run"
PKI="$LAB/pki"
LOGS="$LAB/logs"
KL="$LAB/kubelet"
CTRD="$LAB/containerd"
log() { printf '%s [k8s-lab] %s\n' "$(date +%T)" "$*" >&2; }
# timed NAME CMD...: run CMD, adding "NAME Ns" to the summary up prints (and the stage reports)
TIMES=()
timed() { local name="$1" t0=$SECONDS; shift; "$@"; TIMES+=("$name $((SECONDS - t0))s"); }
die() { log "$*"; exit 1; }

# The bridge, cgroup and IQN names derive from the work directory, so two labs never share one.
ID="$(printf '%s' "$LAB" | sha256sum | cut -c1-6)"
BRIDGE="zk8s-$ID"
CGROUP_ROOT="/smartx-zbs-k8s-$ID"
IQN_FILE=/etc/iscsi/initiatorname.iscsi

k() { "$BIN/kubectl" --kubeconfig "$PKI/admin.kubeconfig" --cache-dir "$LAB/kube-cache" "$@"; }
pidfile() { echo "$RUN/$1.pid"; }
running() { [ -f "$(pidfile "$1")" ] && kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; }

# start NAME CMD...: run CMD in its own session, output to LOGS/NAME.log, pid to RUN/NAME.pid
start() {
  local name="$1"; shift
  running "$name" && return 0
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
  log "started $name (pid $!)"
}

# stop NAME: SIGTERM, up to 20 s, then SIGKILL; only the pid we recorded
stop() {
  local f; f="$(pidfile "$1")"
  [ -f "$f" ] || return 0
  local pid; pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; log "killed $1 ($pid)"; else log "stopped $1 ($pid)"; fi
  fi
  rm -f "$f"
}

# wait_for WHAT SECONDS CMD...: poll CMD every second
wait_for() {
  local what="$1" n="$2"; shift 2
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  die "timed out waiting for $what (logs: $LOGS)"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

load_state() {
  [ -f "$LAB/lab.env" ] || die "no lab in $LAB (scripts/k8s-lab.sh up)"
  # shellcheck source=/dev/null
  source "$LAB/lab.env"
  BIN="${K8S_LAB_BIN:?}"
}

# ---- network: a bridge of our own; pods on its lower half, the service range on its upper ----
pick_subnet() {
  local n=$((16#$ID % 200 + 20)) i
  for i in $(seq 0 40); do
    local net="10.213.$(((n + i) % 256))"
    # free: no address in it here and no route covering it but the default one
    if ! ip -4 -o addr show | grep -q " $net\." && ! ip -4 route show match "$net.0/24" | grep -qv '^default'; then
      echo "$net"; return 0
    fi
  done
  die "no free 10.213.x.0/24 subnet for the lab bridge"
}

net_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$NODE_IP/25" dev "$BRIDGE"
    # the API server listens on the kubernetes Service's ClusterIP itself (no kube-proxy)
    ip addr add "$SVC_IP/32" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    log "bridge $BRIDGE: node $NODE_IP/25, API $SVC_IP"
  fi
  mkdir -p "$LAB/cni"
  cat >"$LAB/cni/10-zbs-k8s-lab.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "zbs-k8s-lab-$ID", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": false, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$LAB/cni-ipam",
            "ranges": [[{"subnet": "$NET.0/25", "rangeStart": "$NET.16", "gateway": "$NODE_IP"}]],
            "routes": [{"dst": "0.0.0.0/0", "gw": "$NODE_IP"}]}}]}
EOF
}

# ---- PKI: one CA; server certs for the API server and kubelet, client certs per component ----
pki() {
  [ -f "$PKI/admin.kubeconfig" ] && return 0
  mkdir -p "$PKI"
  (
    cd "$PKI"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj /CN=zbs-k8s-lab-ca 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    cert() { # cert NAME SUBJECT EXTENSIONS
      printf '%s\n' "$3" >"$1.ext"
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    cert apiserver /CN=kube-apiserver "extendedKeyUsage=serverAuth
subjectAltName=IP:$SVC_IP,IP:$NODE_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    cert kubelet-serving "/CN=$NODE" "extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,DNS:$NODE"
    cert admin "/O=system:masters/CN=zbs-k8s-lab-admin" extendedKeyUsage=clientAuth
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" extendedKeyUsage=clientAuth
    cert controller-manager /CN=system:kube-controller-manager extendedKeyUsage=clientAuth
    cert scheduler /CN=system:kube-scheduler extendedKeyUsage=clientAuth
    cert kubelet "/O=system:nodes/CN=system:node:$NODE" extendedKeyUsage=clientAuth
    for u in admin controller-manager scheduler kubelet; do
      cat >"$u.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: zbs-k8s-lab
  cluster: {server: "https://$SVC_IP:443", certificate-authority: "$PKI/ca.crt"}
users:
- name: $u
  user: {client-certificate: "$PKI/$u.crt", client-key: "$PKI/$u.key"}
contexts:
- name: zbs-k8s-lab
  context: {cluster: zbs-k8s-lab, user: $u}
current-context: zbs-k8s-lab
EOF
    done
  )
}

control_plane_up() {
  local etcd_port="$K8S_LAB_ETCD_PORT" etcd_peer="$K8S_LAB_ETCD_PEER_PORT"
  start etcd "$BIN/etcd" --name lab --data-dir "$LAB/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "lab=http://127.0.0.1:$etcd_peer" --quota-backend-bytes 2147483648
  wait_for etcd 60 curl -sf "http://127.0.0.1:$etcd_port/health"
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address="$SVC_IP" --secure-port=443 --advertise-address="$SVC_IP" \
    --service-cluster-ip-range="$NET.128/25" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true \
    --enable-priority-and-fairness=false --profiling=false --v=1
  wait_for kube-apiserver 180 k get --raw /readyz
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$PKI/controller-manager.kubeconfig" --authentication-kubeconfig="$PKI/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$PKI/controller-manager.kubeconfig" --leader-elect=false --secure-port=0 \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --use-service-account-credentials=true --service-cluster-ip-range="$NET.128/25" --profiling=false --v=1
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$PKI/scheduler.kubeconfig" \
    --authentication-kubeconfig="$PKI/scheduler.kubeconfig" --authorization-kubeconfig="$PKI/scheduler.kubeconfig" \
    --leader-elect=false --secure-port=0 --profiling=false --v=1
  wait_for "the default ServiceAccount" 120 k -n default get serviceaccount default
}

# ---- the node: containerd + kubelet, and the images the manifests name ----
# The node runs in a mount namespace of its own whose "/" is shared, as on a systemd host: the
# node plugin mounts the host root with HostToContainer and kubelet's dir with Bidirectional
# propagation, which need it, and this host's own "/" (private) stays untouched. The pods'
# mounts live in that namespace and go with it on down.
mountns_up() {
  if ! running mountns; then
    start mountns unshare --mount -- sh -c 'mount --make-rshared / && exec sleep infinity'
    wait_for "the node's mount namespace" 10 grep -q ' / / .*shared:' "/proc/$(cat "$(pidfile mountns)")/mountinfo"
  fi
}
# kubelet's cgroup root (its pods' cgroups go below it) in every hierarchy: the unified one
# alone on a cgroup v2 host, each controller's on a v1 or hybrid one
cgroup_dirs() {
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo "/sys/fs/cgroup$CGROUP_ROOT"; return; fi
  local h
  for h in /sys/fs/cgroup/*/; do
    if [ -f "$h/cgroup.procs" ]; then echo "${h%/}$CGROUP_ROOT"; fi
  done
}
# the prefix that runs a command in the node's mount namespace
node_exec() { NODE_EXEC=(nsenter --target "$(cat "$(pidfile mountns)")" --mount --); }

node_up() {
  mountns_up
  node_exec
  mkdir -p "$CTRD" "$KL" "$LAB/pod-logs" "$LAB/csi-state"
  local c
  for c in $(cgroup_dirs); do mkdir -p "$c"; done
  cat >"$CTRD/config.toml" <<EOF
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CTRD/containerd.sock"
[ttrpc]
  address = "$CTRD/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # kubelet asks for oom_score_adj -998 on sandboxes; raising it needs CAP_SYS_RESOURCE,
  # which these VMs do not grant
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$CTRD/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$LAB/cni"
EOF
  start containerd "${NODE_EXEC[@]}" containerd --config "$CTRD/config.toml"
  wait_for containerd 60 ctr --address "$CTRD/containerd.sock" version
  timed "sidecar images" sidecar_images
  timed "driver image" driver_image
  cat >"$KL/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CTRD/containerd.sock
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzPort: 0
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}, x509: {clientCAFile: $PKI/ca.crt}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
failSwapOn: false
failCgroupV1: false
podLogsDir: $LAB/pod-logs
volumePluginDir: $KL/volume-plugins
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 60
EOF
  start kubelet "${NODE_EXEC[@]}" "$BIN/kubelet" --config="$KL/config.yaml" --kubeconfig="$PKI/kubelet.kubeconfig" \
    --root-dir="$KL" --hostname-override="$NODE" --node-ip="$NODE_IP" --v=1
  wait_for "node $NODE to be Ready" 180 node_ready
}

node_ready() { [ "$(k get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]; }

# The images, tagged exactly as the manifests name them (the role's defaults): the driver from
# driver/Containerfile (on the local Debian image scripts/build-image.sh makes, no registry
# needed), the sidecars and the two stand-ins from the binaries, the sandbox (pause) and a
# busybox for workloads.
declare -A tag
image_tags() {
  local key value
  while IFS='=' read -r key value; do tag[$key]="$value"; done < <("$VENV/python" - "$ROOT/roles/zbs_csi/defaults/main.yml" <<'PY'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
print(f"driver={d['zbs_csi_image']}")
for k, v in d["zbs_csi_sidecar_images"].items():
    print(f"{k}={v}")
PY
)
}

sidecar_images() {
  image_tags
  # The role pins the sidecar versions CI tests: refuse to run other ones under their names.
  local name want
  for name in provisioner attacher resizer snapshotter snapshot_controller; do
    case $name in
      snapshot_controller) want="$(sed -n 's/^external-snapshotter=//p' "$BIN/versions")" ;;
      *) want="$(sed -n "s/^external-$name=//p" "$BIN/versions")" ;;
    esac
    [ "${tag[$name]##*:}" = "$want" ] || die "roles/zbs_csi pins $name ${tag[$name]##*:} but tests/k8s builds $want"
  done
  "$VENV/python" "$ROOT/scripts/k8s_images.py" - \
    "${tag[provisioner]}=/csi-provisioner:$BIN/csi-provisioner" \
    "${tag[attacher]}=/csi-attacher:$BIN/csi-attacher" \
    "${tag[resizer]}=/csi-resizer:$BIN/csi-resizer" \
    "${tag[snapshotter]}=/csi-snapshotter:$BIN/csi-snapshotter" \
    "${tag[snapshot_controller]}=/snapshot-controller:$BIN/snapshot-controller" \
    "${tag[registrar]}=/csi-node-driver-registrar:$BIN/csi-node-driver-registrar" \
    "${tag[livenessprobe]}=/livenessprobe:$BIN/livenessprobe" \
    "$PAUSE_IMAGE=/pause:$BIN/pause" \
    "$WORKLOAD_IMAGE=/bin/busybox:$(command -v busybox)" | ctrimport -
}

driver_image() {
  image_tags
  export CONTAINERS_CONF="$ROOT/extensions/molecule/containers.conf"
  local base t0=$SECONDS; base="$("$ROOT/scripts/build-image.sh")"
  TIMES+=("base image $((SECONDS - t0))s")
  log "building ${tag[driver]} from driver/Containerfile on $base"
  # Behind a TLS-inspecting proxy pip needs this host's CA bundle and pip settings: lend them to
  # the build's RUN steps (they do not end up in the image).
  local -a lend=()
  for f in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf; do
    if [ -f "$f" ]; then lend+=(--volume "$f:$f:ro"); fi
  done
  # CI builds from scratch; elsewhere podman's layer cache makes an unchanged tree seconds
  if [ "${CI:-}" = true ]; then lend+=(--no-cache); fi
  (cd "$ROOT" && nice podman build -q --network host "${lend[@]}" --ignorefile driver/Containerfile.ignore \
    --build-arg BASE_IMAGE="$base" -f driver/Containerfile -t "${tag[driver]}" .) >"$LOGS/driver-image.log" 2>&1 ||
    { tail -30 "$LOGS/driver-image.log" >&2; die "driver image build failed"; }
  podman save -q --format docker-archive "${tag[driver]}" | ctrimport -
}

ctrimport() { ctr --address "$CTRD/containerd.sock" -n k8s.io images import "$1" >/dev/null; }

# ---- zbs-lite, the snapshot CRDs, and the driver through the role ----
zbs_lite_up() {
  if ! "$VENV/zbs-lite" status --data-dir "$LAB/zbs-lite" >/dev/null 2>&1; then
    "$VENV/zbs-lite" serve --data-dir "$LAB/zbs-lite" --daemon --listen "$NODE_IP" --api-port 0 --pool dir \
      --vip 127.0.0.1:0 --chunk-port 0 >>"$LOGS/zbs-lite.log" 2>&1 || die "zbs-lite did not start ($LOGS/zbs-lite.log)"
  fi
  "$VENV/zbs-lite" env --data-dir "$LAB/zbs-lite" >"$LAB/zbs-lite.env"
}

# install [ansible-playbook args...]: the smartx.zbs.zbs_csi role, exactly as a user runs it
install() {
  k apply --server-side --field-manager=zbs-k8s-lab -f "$BIN/crds" >/dev/null
  k wait --for=condition=Established --timeout=60s crd --all >/dev/null
  # shellcheck source=/dev/null
  (source "$LAB/zbs-lite.env"
   "$VENV/python" - "$LAB/csi-vars.yml" <<'PY'
import json, os, sys
from pathlib import Path
lab = Path(os.environ["K8S_LAB_DIR"])
v = {
    "zbs_csi_kubeconfig": str(lab / "pki/admin.kubeconfig"),
    "zbs_csi_zbs_host": os.environ["ZBS_HOST"],
    "zbs_csi_zbs_username": os.environ["ZBS_USERNAME"],
    "zbs_csi_zbs_password": os.environ["ZBS_PASSWORD"],
    "zbs_csi_zbs_ca_cert": Path(os.environ["ZBS_CA_PATH"]).read_text(),
    # the lab's node is this host: no iscsi_tcp module here, so the userspace connector
    "zbs_csi_connector": "userspace",
    "zbs_csi_kubelet_dir": str(lab / "kubelet"),
    "zbs_csi_state_dir": str(lab / "csi-state"),
    "zbs_csi_node_health_port": int(os.environ["K8S_LAB_NODE_HEALTH_PORT"]),
    "zbs_csi_install_snapshot_controller": True,
    "zbs_csi_controller_replicas": 1,
    "zbs_csi_storage_classes": [
        {"name": "zbs", "default": True, "fstype": "ext4", "parameters": {"replication.n": "1", "thinProvisioning": "true"}},
        {"name": "zbs-xfs", "fstype": "xfs", "parameters": {"replication.n": "1"}},
    ],
}
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump(v, f, indent=1)
PY
  )
  # the venv's Python has the kubernetes client kubernetes.core needs
  ANSIBLE_COLLECTIONS_PATH="$ROOT/.cache/collections" "$VENV/ansible-playbook" -i localhost, -c local \
    -e ansible_python_interpreter="$VENV/python" "$ROOT/playbooks/install_csi.yml" -e "@$LAB/csi-vars.yml" "$@"
}

binaries() { BIN="$("$ROOT/scripts/k8s-build.sh")"; }

write_state() {
  {
    echo "export K8S_LAB_DIR=$LAB K8S_LAB_BIN=$BIN KUBECONFIG=$PKI/admin.kubeconfig KUBECACHEDIR=$LAB/kube-cache"
    echo "export K8S_LAB_NODE=$NODE K8S_LAB_NODE_IP=$NODE_IP K8S_LAB_NET=$NET K8S_LAB_BRIDGE=$BRIDGE"
    echo "export K8S_LAB_KUBELET_DIR=$KL K8S_LAB_CSI_STATE_DIR=$LAB/csi-state K8S_LAB_CSI_VARS=$LAB/csi-vars.yml"
    echo "export K8S_LAB_KUBELET_PORT=$KUBELET_PORT K8S_LAB_NODE_HEALTH_PORT=$K8S_LAB_NODE_HEALTH_PORT"
    echo "export K8S_LAB_ETCD_PORT=$K8S_LAB_ETCD_PORT K8S_LAB_ETCD_PEER_PORT=$K8S_LAB_ETCD_PEER_PORT"
    echo "export K8S_LAB_PAUSE_IMAGE=$PAUSE_IMAGE K8S_LAB_WORKLOAD_IMAGE=$WORKLOAD_IMAGE"
    echo "export K8S_LAB_CONTAINERD=$CTRD/containerd.sock K8S_LAB_IQN_CREATED=${K8S_LAB_IQN_CREATED:-0}"
    echo "export K8S_LAB_NODE_PIDFILE=$RUN/mountns.pid"
  } >"$LAB/lab.env"
}

# The node plugin reads the host's initiator name (as on a node smartx.zbs.zbs_node prepared);
# this host may have none (no open-iscsi): then the lab writes one and removes it on down.
node_iqn() {
  K8S_LAB_IQN_CREATED="${K8S_LAB_IQN_CREATED:-0}"
  if [ ! -s "$IQN_FILE" ]; then
    mkdir -p "$(dirname "$IQN_FILE")"
    echo "InitiatorName=iqn.2026-01.com.smartx.zbs-k8s-lab:$ID" >"$IQN_FILE"
    K8S_LAB_IQN_CREATED=1
    log "wrote $IQN_FILE (removed again by down)"
  fi
}

up() {
  [ "$(id -u)" -eq 0 ] || die "needs root (containerd, kubelet, mounts, a bridge)"
  local sock="$KL/plugins/$DRIVER/csi.sock"
  [ "${#sock}" -le 100 ] || die "K8S_LAB_DIR is too long for unix socket paths under it: $LAB"
  mkdir -p "$LAB" "$RUN" "$LOGS"; LAB="$(cd "$LAB" && pwd)"
  export K8S_LAB_DIR="$LAB"
  local t0=$SECONDS
  timed binaries binaries
  if [ -f "$LAB/lab.env" ]; then load_state; fi
  NET="${K8S_LAB_NET:-$(pick_subnet)}"
  NODE_IP="$NET.1" SVC_IP="$NET.129"
  KUBELET_PORT="${K8S_LAB_KUBELET_PORT:-$(free_port)}"
  export K8S_LAB_NODE_HEALTH_PORT="${K8S_LAB_NODE_HEALTH_PORT:-$(free_port)}"
  K8S_LAB_ETCD_PORT="${K8S_LAB_ETCD_PORT:-$(free_port)}" K8S_LAB_ETCD_PEER_PORT="${K8S_LAB_ETCD_PEER_PORT:-$(free_port)}"
  PAUSE_IMAGE=localhost/zbs-k8s-lab/pause:1 WORKLOAD_IMAGE=localhost/zbs-k8s-lab/busybox:1
  node_iqn
  write_state
  net_up
  pki
  timed "control plane" control_plane_up
  timed "node (images included)" node_up
  zbs_lite_up
  timed role install
  log "up in $((SECONDS - t0))s: $(printf '%s, ' "${TIMES[@]}" | sed 's/, $//')"
  log "up: source <(scripts/k8s-lab.sh env); kubectl get pods -A"
}

status() {
  load_state
  local n
  for n in etcd kube-apiserver kube-controller-manager kube-scheduler mountns containerd kubelet; do
    if running "$n"; then echo "$n: running (pid $(cat "$(pidfile "$n")"))"; else echo "$n: stopped"; fi
  done
  if running kube-apiserver; then k get nodes -o wide; k -n smartx-zbs-csi get pods -o wide; fi
}

# ---- teardown: by pid, and only what lives under the work directory ----
down() {
  [ -d "$LAB" ] || return 0
  LAB="$(cd "$LAB" && pwd)"
  if [ -f "$LAB/lab.env" ]; then load_state; fi
  stop kubelet
  if running containerd; then
    local c=(ctr --address "$CTRD/containerd.sock" -n k8s.io) id
    for id in $("${c[@]}" tasks ls -q 2>/dev/null); do "${c[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    sleep 1
    for id in $("${c[@]}" tasks ls -q 2>/dev/null); do "${c[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $("${c[@]}" containers ls -q 2>/dev/null); do "${c[@]}" containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  stop containerd
  # shims outlive containerd: stop those of our containerd (their -address is our socket)
  local pid
  for pid in $(pgrep -f -- "containerd-shim-runc-v2 .*-address $CTRD/containerd.sock" || true); do
    if kill -KILL "$pid" 2>/dev/null; then log "stopped shim $pid"; fi
  done
  # the node's mount namespace goes with its last process, and the pods' mounts with it
  stop mountns
  # zbs-lite unmounts its own XFS pool
  if [ -d "$LAB/zbs-lite" ]; then "$VENV/zbs-lite" stop --data-dir "$LAB/zbs-lite" >/dev/null 2>&1 || true; fi
  # mounts the pods' volumes, containerd and kubelet left under the work directory, deepest first
  local m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
  done < <(awk -v d="$LAB/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  # loop devices whose backing file lives under the work directory (the userspace connector's)
  local dev back
  while read -r dev back; do
    case "$back" in "$LAB"/*) if losetup -d "$dev"; then log "detached $dev ($back)"; fi ;; esac
  done < <(losetup -l -n -O NAME,BACK-FILE 2>/dev/null || true)
  local n
  for n in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$n"; done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; log "removed bridge $BRIDGE"; fi
  local c
  for c in $(cgroup_dirs); do
    if [ -d "$c" ]; then find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
  done
  if [ "${K8S_LAB_IQN_CREATED:-0}" = 1 ] && grep -q "zbs-k8s-lab:$ID\$" "$IQN_FILE" 2>/dev/null; then
    rm -f "$IQN_FILE"; rmdir "$(dirname "$IQN_FILE")" 2>/dev/null || true
  fi
  log "down (scripts/k8s-lab.sh up resumes it, purge deletes it)"
}

purge() {
  down
  [ -d "$LAB" ] || return 0
  if grep -q " $LAB/" /proc/self/mountinfo; then die "mounts left under $LAB; not deleting it"; fi
  rm -rf "$LAB"
  log "removed $LAB"
}

case "${1:-}" in
  up) up ;;
  install) shift; load_state; export K8S_LAB_DIR="$LAB"; install "$@" ;;
  env) load_state; cat "$LAB/lab.env" "$LAB/zbs-lite.env" ;;
  status) status ;;
  down) down ;;
  purge) purge ;;
  *) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

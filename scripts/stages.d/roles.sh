# shellcheck shell=bash
# Stages of the roles and playbooks part (sourced by scripts/test.sh).

# molecule: the roles in podman containers built from a local debootstrap image (no registry
# is reachable); the image is cached in podman's store, keyed by scripts/build-image.sh, and
# rebuilt under CI=true.
stage_molecule() {
  export CONTAINERS_CONF="$ROOT/extensions/molecule/containers.conf"
  local image
  image="$("$ROOT/scripts/build-image.sh")" || { echo "molecule: scripts/build-image.sh failed to build the node image"; return 1; }
  export ZBS_MOLECULE_IMAGE="$image"
  # Molecule's state and the scenario's files (zbs-lite's data dir, rendered manifests) live in
  # its ephemeral directory, by default ~/.ansible/tmp/molecule.<hash of "zbs">.<scenario>: one
  # path for every checkout, so concurrent runs clobbered each other and a run could inherit an
  # earlier one's state. Each run gets its own, removed afterwards.
  local eph; eph="$(mktemp -d /tmp/smartx-zbs-molecule.XXXXXX)"
  local rc=0 scenario
  # extensions/molecule/<scenario> (collection-wide) and roles/<role>/molecule/<scenario>
  for scenario in "$ROOT"/extensions/molecule/*/molecule.yml "$ROOT"/roles/*/molecule/*/molecule.yml; do
    [ -f "$scenario" ] || continue
    local base; base="$(dirname "$(dirname "$(dirname "$scenario")")")"
    local name; name="$(basename "$(dirname "$scenario")")"
    echo "--- molecule test: ${base#"$ROOT"/} / $name"
    (cd "$base" && MOLECULE_EPHEMERAL_DIRECTORY="$eph/${base#"$ROOT"/}/$name" molecule test -s "$name") || rc=1
  done
  rm -rf "$eph"
  return $rc
}

# quickstart: the README's main job end to end, then again (it must converge with no
# changes), then torn down.
stage_quickstart() {
  local out; out="$(mktemp -d /tmp/zbs-quickstart.XXXXXX)"
  export ZBS_QUICKSTART_DIR="$out/state" ZBS_QUICKSTART_OUT="$out/out"
  local rc=0
  "$ROOT/scripts/quickstart.sh" >"$out/first.log" 2>&1 || { tail -60 "$out/first.log"; rc=1; }
  if [ $rc -eq 0 ]; then
    grep -A13 '"msg": \[' "$out/first.log" || true
    # The LUNs' data must live in the capped XFS image, not on this machine's own disk.
    local pool="$out/state/zbs-lite/pool" cap=$((11 << 30))
    if [ "$(stat -f -c %T "$pool")" != xfs ] || [ "$(df -B1 --output=size "$pool" | tail -1)" -gt "$cap" ]; then
      echo "quickstart: the pool $pool is not a capped XFS image:"; df -hT "$pool"; rc=1
    fi
    "$ROOT/scripts/quickstart.sh" >"$out/second.log" 2>&1 || { tail -60 "$out/second.log"; rc=1; }
    if [ $rc -eq 0 ] && ! grep -Eq '^localhost +: ok=[0-9]+ +changed=0 +unreachable=0 +failed=0' "$out/second.log"; then
      echo "quickstart: the second run reported changes:"; grep -B2 -A8 'changed:' "$out/second.log" | head -60
      grep -A2 'PLAY RECAP' "$out/second.log"; rc=1
    fi
  fi
  "$ROOT/scripts/quickstart.sh" --purge >"$out/down.log" 2>&1 || { tail -30 "$out/down.log"; rc=1; }
  unset ZBS_QUICKSTART_DIR ZBS_QUICKSTART_OUT
  if grep -q " $out/" /proc/mounts; then echo "quickstart: mounts left under $out"; rc=1; else rm -rf "$out"; fi
  return $rc
}

ALL_STAGES+=(molecule quickstart)

#!/usr/bin/env bash
# The whole test suite, in stages, with a summary at the end.
#   scripts/test.sh            every stage
#   scripts/test.sh ruff mypy  only the named stages
# Sets itself up first (scripts/setup.sh), starts the services the tests need and stops
# them again. Exits non-zero when any stage fails.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
"$ROOT/scripts/setup.sh" || { echo "setup failed"; exit 1; }

export PATH="$ROOT/.venv/bin:$ROOT/.cache/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.cache/collections"
export PYTHONDONTWRITEBYTECODE=1
source "$ROOT/scripts/lib.sh"

# ansible-test needs the collection in a tree of its own, outside this git checkout (inside
# it, git would report the copy as ignored and every target would be skipped), and without the
# driver and zbs-lite, which are not collection content. Each call gets its own copy so
# concurrent runs never share one.
collection_copy() {
  local base; base="$(mktemp -d /tmp/smartx-zbs-ansible-test.XXXXXX)"
  local dest="$base/ansible_collections/smartx/zbs"
  mkdir -p "$dest"
  rsync -a \
    --exclude .git --exclude .venv --exclude .cache --exclude tests/output \
    --exclude __pycache__ --exclude .mypy_cache --exclude .ruff_cache --exclude .pytest_cache \
    --exclude /driver --exclude /zbs_lite --exclude /bench --exclude /scripts --exclude /extensions \
    --exclude /tests/zbs_lite --exclude /tests/client --exclude /tests/driver --exclude /tests/e2e \
    --exclude /tests/roles --exclude /tests/modules --exclude /tests/conftest.py --exclude /pyproject.toml --exclude '*.egg-info' \
    --exclude /quickstart-out --exclude /.ci \
    "$ROOT/" "$dest/"
  echo "$dest"
}

# in_collection_copy CMD...: run CMD inside a fresh copy of the collection, then remove it.
in_collection_copy() {
  local dir; dir="$(collection_copy)"
  (cd "$dir" && "$@"); local rc=$?
  rm -rf "${dir%/ansible_collections/smartx/zbs}"
  return $rc
}

stage_ruff() { ruff check . && ruff format --check .; }

# Our own shell (the collection's is checked by ansible-test sanity's shellcheck test).
stage_shellcheck() { shellcheck -x scripts/*.sh scripts/stages.d/*.sh .ci/run; }

stage_mypy() {
  local targets=(plugins/module_utils)
  [ -d driver/zbs_csi ] && compgen -G "driver/zbs_csi/*.py" >/dev/null && targets+=(driver/zbs_csi)
  [ -d zbs_lite ] && compgen -G "zbs_lite/*.py" >/dev/null && targets+=(zbs_lite)
  compgen -G "plugins/module_utils/*.py" >/dev/null || targets=("${targets[@]:1}")
  ((${#targets[@]})) || { echo "nothing to type-check yet"; return 0; }
  mypy "${targets[@]}"
}

stage_sanity() { in_collection_copy ansible-test sanity --local --python 3.11 --requirements --color no; }

stage_lint() { ansible-lint --profile production --offline; }

stage_build() {
  local out; out="$(mktemp -d)"
  ansible-galaxy collection build --output-path "$out" --force . &&
    python3 "$ROOT/scripts/check_tarball.py" "$out"/smartx-zbs-*.tar.gz
  local rc=$?; rm -rf "$out"; return $rc
}

stage_units() {
  compgen -G "tests/unit/plugins/*/test_*.py" >/dev/null || compgen -G "tests/unit/plugins/*/*/test_*.py" >/dev/null || {
    echo "no unit tests yet"; return 0; }
  in_collection_copy ansible-test units --local --python 3.11 --requirements --color no
}

# One pytest process per test root: each root has its own conftest and helper modules, and
# same-named test files in two roots must not collide.
PYTEST_ROOTS=(tests/zbs_lite tests/zbs_lite/iscsi tests/client tests/driver tests/e2e tests/roles)
stage_pytest() {
  local rc=0 root
  local -a summary=()
  for root in "${PYTEST_ROOTS[@]}"; do
    [ -d "$root" ] || continue
    local -a ignore=()
    for other in "${PYTEST_ROOTS[@]}"; do
      [ "$other" != "$root" ] && [ "${other#"$root"/}" != "$other" ] && ignore+=("--ignore=$other")
    done
    printf '\n--- pytest %s\n' "$root"
    if run_pytest -p no:cacheprovider "${ignore[@]}" "$root"; then summary+=("PASS $root"); else summary+=("FAIL $root"); rc=1; fi
  done
  printf '\n--- pytest roots\n'; printf '  %s\n' "${summary[@]}"
  return $rc
}

# ansible-test integration passes only a fixed set of environment variables to the targets,
# so the running zbs-lite is handed to them as variables in integration_config.yml
# (zbs_host, zbs_username, zbs_password, zbs_ca_path, zbs_iscsi_portal).
write_integration_config() {
  python3 - "$1/tests/integration/integration_config.yml" <<'PY'
import json, os, sys
keys = {"zbs_host": "ZBS_HOST", "zbs_username": "ZBS_USERNAME", "zbs_password": "ZBS_PASSWORD",
        "zbs_ca_path": "ZBS_CA_PATH", "zbs_iscsi_portal": "ZBS_ISCSI_PORTAL", "zbs_cluster": "ZBS_CLUSTER"}
with open(sys.argv[1], "w") as f:
    for var, env in keys.items():
        f.write(f"{var}: {json.dumps(os.environ.get(env, ''))}\n")
PY
}

run_integration() {
  local dir; dir="$(collection_copy)"
  write_integration_config "$dir"
  (cd "$dir" && ansible-test integration --local --python 3.11 --color no "$@"); local rc=$?
  rm -rf "${dir%/ansible_collections/smartx/zbs}"
  return $rc
}

stage_integration() {
  compgen -G "tests/integration/targets/*/tasks/main.yml" >/dev/null || { echo "no integration targets yet"; return 0; }
  with_zbs_lite run_integration
}

# Stages in order; issues that build a part add the stage that tests it.
ALL_STAGES=(ruff shellcheck mypy sanity lint build units pytest integration)
# Each part adds its own stages in scripts/stages.d/*.sh (define stage_NAME, append to ALL_STAGES).
# shellcheck source=/dev/null
for f in "$ROOT"/scripts/stages.d/*.sh; do [ -f "$f" ] && source "$f"; done

run_stages "$@"

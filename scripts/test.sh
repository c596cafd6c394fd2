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
export PYTHONDONTWRITEBYTECODE=1 GOTOOLCHAIN=local
source "$ROOT/scripts/lib.sh"

# ansible-test keeps its sanity virtualenvs and the get-pip script under ~/.ansible/test. A warm
# machine's copies would hide a broken bootstrap, so under CI=true it runs with a home of its
# own for this run (docs/development.md, "Caches").
ANSIBLE_TEST_HOME="$HOME"
if [ "${CI:-}" = true ]; then
  ANSIBLE_TEST_HOME="$(mktemp -d /tmp/smartx-zbs-ci-home.XXXXXX)"
  trap 'rm -rf "$ANSIBLE_TEST_HOME"' EXIT
  HOME="$ANSIBLE_TEST_HOME" python "$ROOT/scripts/get_pip_standin.py" --install
  # scripts/build-image.sh rebuilds the node image once per run, not once per stage using it
  export ZBS_IMAGE_RUN_DIR="$ANSIBLE_TEST_HOME"
fi
ansible_test() { HOME="$ANSIBLE_TEST_HOME" ansible-test "$@"; }

# ansible-test needs the collection in a tree of its own, outside this git checkout (inside
# it, git would report the copy as ignored and every target would be skipped), holding only the
# collection content (scripts/collection_content.py). Each call gets its own copy so concurrent
# runs never share one.
collection_copy() {
  local base; base="$(mktemp -d /tmp/smartx-zbs-ansible-test.XXXXXX)"
  local dest="$base/ansible_collections/smartx/zbs"
  mkdir -p "$dest"
  local -a filter; mapfile -t filter < <(python3 "$ROOT/scripts/collection_content.py" rsync-filter)
  rsync -a "${filter[@]}" "$ROOT/" "$dest/"
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

# The packages to check and the collection path are in pyproject.toml ([tool.mypy]).
stage_mypy() { mypy; }

stage_sanity() { in_collection_copy ansible_test sanity --local --python 3.11 --requirements --color no; }

stage_lint() { ansible-lint --profile production --offline; }

# The tarball holds exactly the collection content; galaxy.yml and the driver image's context
# agree with the same definition (scripts/collection_content.py).
stage_build() {
  local out; out="$(mktemp -d /tmp/smartx-zbs-build.XXXXXX)"
  python3 "$ROOT/scripts/collection_content.py" check-galaxy &&
    python3 "$ROOT/scripts/collection_content.py" check-image &&
    ansible-galaxy collection build --output-path "$out" --force . &&
    python3 "$ROOT/scripts/collection_content.py" check-tarball "$out"/smartx-zbs-*.tar.gz
  local rc=$?; rm -rf "$out"; return $rc
}

stage_units() { in_collection_copy ansible_test units --local --python 3.11 --requirements --color no; }

# One pytest process per test root: each root has its own conftest and helper modules, and
# same-named test files in two roots must not collide.
PYTEST_ROOTS=(tests/zbs_lite tests/zbs_lite/iscsi tests/client tests/driver tests/e2e tests/roles tests/tooling)
# Each run gets its own pytest base temp dir: under the shared default (/tmp/pytest-of-USER) a
# concurrent run's cleanup removes the numbered dirs of older runs, mounts of a run still going
# included. Removed afterwards without crossing into a file system a failed test left mounted.
stage_pytest() {
  local rc=0 root base
  local -a summary=()
  base="$(mktemp -d /tmp/smartx-zbs-pytest.XXXXXX)"
  for root in "${PYTEST_ROOTS[@]}"; do
    local -a ignore=()
    for other in "${PYTEST_ROOTS[@]}"; do
      [ "$other" != "$root" ] && [ "${other#"$root"/}" != "$other" ] && ignore+=("--ignore=$other")
    done
    printf '\n--- pytest %s\n' "$root"
    if python -m pytest -p no:cacheprovider --basetemp="$base/${root//\//-}" "${ignore[@]}" "$root"; then
      summary+=("PASS $root")
    else
      summary+=("FAIL $root"); rc=1
    fi
  done
  rm -rf --one-file-system "$base"
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
  (cd "$dir" && ansible_test integration --local --python 3.11 --color no "$@"); local rc=$?
  rm -rf "${dir%/ansible_collections/smartx/zbs}"
  return $rc
}

stage_integration() { with_zbs_lite run_integration; }

# Stages in order; each part adds the stage that tests it.
ALL_STAGES=(ruff shellcheck mypy sanity lint build units pytest integration)
# Each part adds its own stages in scripts/stages.d/*.sh (define stage_NAME, append to ALL_STAGES).
# shellcheck source=/dev/null
for f in "$ROOT"/scripts/stages.d/*.sh; do [ -f "$f" ] && source "$f"; done

run_stages "$@"

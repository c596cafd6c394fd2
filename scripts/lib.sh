# shellcheck shell=bash
# Shared helpers for scripts/test.sh and scripts/quickstart.sh (sourced, not run).

# with_zbs_lite CMD...: run CMD with a fresh zbs-lite serving (random ports, so it never
# collides with a quickstart or another run) and its environment exported.
with_zbs_lite() {
  local data; data="$(mktemp -d /tmp/zbs-lite-test.XXXXXX)"
  zbs-lite serve --data-dir "$data" --daemon --api-port 0 --vip 127.0.0.1:0 --chunk-port 0 \
    >"$data/serve.log" 2>&1 || { cat "$data/serve.log"; return 1; }
  # a subshell: the ZBS_* of this instance must not outlive it into later stages
  (eval "$(zbs-lite env --data-dir "$data")" && "$@"); local rc=$?
  zbs-lite stop --data-dir "$data" >/dev/null 2>&1 || true
  rm -rf "$data"
  return $rc
}

# run_stages [NAMES...]: run the named (default: all) stages, time them, print a summary.
run_stages() {
  local stages=("$@")
  ((${#stages[@]})) || stages=("${ALL_STAGES[@]}")
  local -a names=() results=() times=()
  local passed=0 failed=0
  for s in "${stages[@]}"; do
    if ! declare -F "stage_$s" >/dev/null; then echo "unknown stage: $s (have: ${ALL_STAGES[*]})"; return 2; fi
  done
  for s in "${stages[@]}"; do
    printf '\n===== stage %s =====\n' "$s"
    local t0=$SECONDS
    if "stage_$s"; then results+=(PASS); passed=$((passed + 1)); else results+=(FAIL); failed=$((failed + 1)); fi
    names+=("$s"); times+=($((SECONDS - t0)))
  done
  printf '\n===== summary =====\n'
  for i in "${!names[@]}"; do printf '  %-12s %s  %4ss\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"; done
  printf 'stages: %d passed, %d failed\n' "$passed" "$failed"
  [ "$failed" -eq 0 ]
}

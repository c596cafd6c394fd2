#!/usr/bin/env bash
# Runs the day-2 example playbook (playbooks/lun_admin.yml, with its own assertions) against the zbs-lite of
# this test run, as a user would over time:
#   1. two hosts use the application;
#   2. the second host is retired (moved to lun_admin_retired_hosts): it is revoked everywhere;
#   3. the same again converges: changed=0 - nothing is re-granted, not even briefly;
#   4. clean-up.
set -euo pipefail

vars_file="$(cd ../.. && pwd)/integration_config.yml"
app="it$RANDOM$RANDOM-lunadmin"
node1=iqn.2004-10.com.example:app-node1
node2=iqn.2004-10.com.example:app-node2
play=(ansible-playbook smartx.zbs.lun_admin -e "@$vars_file" -e "lun_admin_app=$app" "$@")

"${play[@]}" -e "{\"lun_admin_hosts\": [\"$node1\", \"$node2\"], \"lun_admin_retired_hosts\": []}"
"${play[@]}" | tee /dev/stderr | grep -Eq '^localhost +: ok=[0-9]+ +changed=[1-9]'
out="$("${play[@]}")"
echo "$out"
if ! grep -Eq '^localhost +: ok=[0-9]+ +changed=0 ' <<<"$out"; then
  echo "lun_admin did not converge: the third run reported changes" >&2
  exit 1
fi
"${play[@]}" -e lun_admin_cleanup=true

#!/usr/bin/env bash
# Runs the day-2 example playbook (playbooks/lun_admin.yml, with its own assertions) against the zbs-lite of
# this test run: once leaving the application in place, then again over the existing objects with clean-up.
set -euo pipefail

vars_file="$(cd ../.. && pwd)/integration_config.yml"
app="it$RANDOM$RANDOM-lunadmin"
play=(ansible-playbook smartx.zbs.lun_admin -e "@$vars_file" -e "lun_admin_app=$app" "$@")

"${play[@]}"
"${play[@]}" -e lun_admin_cleanup=true

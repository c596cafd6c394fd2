# shellcheck shell=bash
# The modules part (sourced by scripts/test.sh): a pytest root whose tests run the modules with
# ansible-playbook against a fresh zbs-lite - every module's EXAMPLES and docs/modules.md's
# examples as written, and refusals that need real iSCSI sessions.
PYTEST_ROOTS+=(tests/modules)

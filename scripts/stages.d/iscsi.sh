# shellcheck shell=bash
# zbs-lite iSCSI data plane: a subset of libiscsi's iscsi-test-cu conformance suite against a
# chunk server (the pytest tests in tests/zbs_lite/iscsi run in the generic pytest stage).
# The selected suites and the reasons for the excluded ones are in the script's docstring.
stage_iscsi() { python tests/zbs_lite/iscsi/conformance.py; }
ALL_STAGES+=(iscsi)

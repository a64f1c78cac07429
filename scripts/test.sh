#!/usr/bin/env bash
# Set up and run the test suite in both supported environments (what CI runs):
#
#   1. .venv         transformers 5.x (scripts/setup.sh)
#   2. .venv-compat  transformers 4.57.x with AdapterHub's `adapters` (scripts/setup-compat.sh): the same suite
#                    without the slow end-to-end runs (-m "not slow"; they ran in the first), plus the tests marked
#                    `adapters` (the bottleneck strategy), which skip in the first environment.
#
#   scripts/test.sh [PYTEST ARGS...]    e.g. scripts/test.sh -x, scripts/test.sh tests/plugins/test_bottleneck.py
#
# The arguments go to both pytest runs. Both run even when the first fails; the exit status is the first failure's.
#   HARNESS_TEST_COMPAT=0   run only the first environment (a quicker local loop)
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
scripts/setup.sh || exit $?
echo "== tests: .venv (transformers 5) =="
.venv/bin/python -m pytest "$@" || status=$?
if [ "${HARNESS_TEST_COMPAT:-1}" != "0" ]; then
    scripts/setup-compat.sh || exit $?
    echo "== tests: .venv-compat (transformers 4.57, adapters) =="
    compat=0
    .venv-compat/bin/python -m pytest -m "not slow" "$@" || compat=$?
    [ "$status" -ne 0 ] || status=$compat
fi
exit "$status"

#!/usr/bin/env bash
# Set up and run the test suite in both supported environments (what CI runs):
#
#   1. .venv         transformers 5.x (scripts/setup.sh); then the example third-party plugin package
#                    (examples/plugin-package) is pip-installed there, its own tests run, and it is uninstalled
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
if [ "$#" -eq 0 ]; then  # the whole suite: also the example plugin package, installed as a third party installs it
    echo "== tests: examples/plugin-package (installed into .venv) =="
    example=0
    .venv/bin/python -m pip install -q ./examples/plugin-package || example=$?
    [ "$example" -ne 0 ] || .venv/bin/python -m pytest examples/plugin-package/tests || example=$?
    .venv/bin/python -m pip uninstall -q -y harness-example-plugins || true
    [ "$status" -ne 0 ] || status=$example
fi
if [ "${HARNESS_TEST_COMPAT:-1}" != "0" ]; then
    scripts/setup-compat.sh || exit $?
    echo "== tests: .venv-compat (transformers 4.57, adapters) =="
    compat=0
    .venv-compat/bin/python -m pytest -m "not slow" "$@" || compat=$?
    [ "$status" -ne 0 ] || status=$compat
fi
exit "$status"

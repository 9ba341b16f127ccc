#!/usr/bin/env bash
# The 1M-token points of the speed table, added to benchmarks/results/speed_peers.json (which holds 4K-128K):
# two single-threaded streams side by side, as the 4K-128K points were measured (one thread per method, the other
# core busy). LongLLMLingua is left out at 1M (about 2.7 hours at its measured rate).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=benchmarks/results/speed_peers.json
COMMON=(--lengths 1048576 --cap 900 --threads 1 --out "$OUT" --extend)
$PY -m benchmarks.speed --methods ours,rag,bm25 "${COMMON[@]}" &
$PY -m benchmarks.speed --methods langchain-embeddings-filter,llamaindex-sentence-optimizer "${COMMON[@]}" &
wait

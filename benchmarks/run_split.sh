#!/usr/bin/env bash
# The quality benchmark as it was run for the README: two single-threaded processes side by side (a 2-core CPU
# does more work this way than one process with two threads), then the parts merged into results/quality.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=benchmarks/results/parts
mkdir -p "$OUT"
(
  $PY -m benchmarks.quality --tasks hotpotqa --threads 1 \
    --methods ours-sentence,ours-tags,ours+bm25,bm25,minilm-cosine,random --out "$OUT/hotpot_main.json"
) &
(
  $PY -m benchmarks.quality --tasks needle --threads 1 \
    --methods ours-sentence,ours-tags,bm25,minilm-cosine,random --out "$OUT/needle.json"
  $PY -m benchmarks.quality --tasks multikey,variable_tracking,squad --limit 20 --threads 1 \
    --methods ours-sentence,ours-tags,ours+bm25,bm25,minilm-cosine,random --out "$OUT/synthetic_squad.json"
) &
wait
$PY -m benchmarks.merge "$OUT/hotpot_main.json" "$OUT/needle.json" "$OUT/synthetic_squad.json" \
  --out benchmarks/results/quality.json

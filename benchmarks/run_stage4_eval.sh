#!/usr/bin/env bash
# Model selection for a new critic stage (issue 14), as run on 2026-12-01: the shipped critic and the candidate on
# the dev sets (benchmarks/critic_dev.py: HotpotQA dev, our paraphrase and decoy-chain dev sets, SQuAD), the chains
# with up to 4 hops, the small sets of the quality benchmark (needles, multi-key, variable tracking, SQuAD), and the
# BM25 weight on HotpotQA dev. Two single-threaded lanes side by side (a 2-core CPU does more work this way), nothing
# else running. The cost of hops is timed separately, alone: critic_dev --tasks cost.
#
#   bash benchmarks/run_stage4_eval.sh runs/critic-v4
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CANDIDATE=${1:?usage: run_stage4_eval.sh CRITIC_FOLDER}
OUT=benchmarks/results/stage4
mkdir -p "$OUT"
(
  $PY -m benchmarks.critic_dev --threads 1 --tasks hotpot paraphrase squad --hops 1 2 --out "$OUT/dev_shipped.json"
  $PY -m benchmarks.critic_dev --threads 1 --tasks chains --hops 1 2 3 4 --out "$OUT/chains_shipped.json"
  $PY -m benchmarks.quality --tasks needle --threads 1 --methods ours-sentence,ours+bm25 \
    --out "$OUT/needle_shipped.json"
  $PY -m benchmarks.quality --tasks multikey,variable_tracking --limit 20 --threads 1 \
    --methods ours-sentence,ours+bm25 --out "$OUT/synthetic_shipped.json"
  $PY -m benchmarks.quality --tasks squad --limit 60 --threads 1 \
    --methods ours-sentence,ours+bm25 --out "$OUT/squad_shipped.json"
) > "$OUT/lane_shipped.log" 2>&1 &
(
  $PY -m benchmarks.critic_dev --model "$CANDIDATE" --threads 1 --tasks hotpot paraphrase squad --hops 1 2 \
    --out "$OUT/dev_candidate.json"
  $PY -m benchmarks.critic_dev --model "$CANDIDATE" --threads 1 --tasks chains --hops 1 2 3 4 \
    --out "$OUT/chains_candidate.json"
  $PY -m benchmarks.quality --model "$CANDIDATE" --tasks needle --threads 1 --methods ours-sentence,ours+bm25 \
    --out "$OUT/needle_candidate.json"
  $PY -m benchmarks.quality --model "$CANDIDATE" --tasks multikey,variable_tracking --limit 20 --threads 1 \
    --methods ours-sentence,ours+bm25 --out "$OUT/synthetic_candidate.json"
  $PY -m benchmarks.quality --model "$CANDIDATE" --tasks squad --limit 60 --threads 1 \
    --methods ours-sentence,ours+bm25 --out "$OUT/squad_candidate.json"
  $PY -m benchmarks.tune_fusion --model "$CANDIDATE" --threads 1 --out "$OUT/fusion_dev_candidate.json"
) > "$OUT/lane_candidate.log" 2>&1 &
wait

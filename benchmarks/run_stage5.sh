#!/usr/bin/env bash
# Stage 5 of the default critic (issue 14), one script, nothing else on the CPU while it runs (prepared 2026-12-02,
# not yet run: that day's machine had no AMX, where a pass of the critic in bf16 ran about 5x slower than with AMX):
#   1. train stage 4 again (configs/stage4.json and its seed; check the loss log against the model card's to see
#      whether it remade the same run; about 65 minutes in bf16 on a 2-core AMX CPU; without AMX set "bf16": false
#      (fp32 about 2.0 s a step on a 2-core Xeon with AVX-512-BF16: about 100 minutes; 3.4 s a step on a 2-core AMD
#      EPYC with AVX2 only, measured 2026-12-02: about 170 minutes, more than a session); --resume continues a run
#      cut short);
#   2. WiSE-FT: average it with the shipped critic at each ALPHA (cprs_integrations/training/interpolate.py);
#   3. evaluate each average as run_stage4_eval.sh does, in two single-threaded lanes: the small sets of the quality
#      benchmark first (stage 4 lost a question there), then HotpotQA dev / test-300, paraphrase, SQuAD and chains.
# The shipped critic's figures under the current engine are in benchmarks/results/hops_v2/.
#
#   bash benchmarks/run_stage5.sh            # ALPHAS="0.5" by default
#   ALPHAS="0.3 0.5" bash benchmarks/run_stage5.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
RUN=runs/critic-v4
OUT=benchmarks/results/stage5
mkdir -p "$OUT" runs
if [ ! -f "$RUN/model.safetensors" ]; then
  $PY -m cprs_integrations.cli train --config cprs_integrations/training/configs/stage4.json --output "$RUN" \
    --resume > runs/stage5_train.log 2>&1
fi
for ALPHA in ${ALPHAS:-0.5}; do
  TAG=wise${ALPHA/./}
  CRITIC=runs/critic-v4-$TAG
  [ -d "$CRITIC" ] || $PY -m cprs_integrations.training.interpolate cprs_integrations/models/default "$RUN" \
    --alpha "$ALPHA" --output "$CRITIC"
  (
    $PY -m benchmarks.quality --model "$CRITIC" --tasks multikey,variable_tracking --limit 20 --threads 1 \
      --methods ours-sentence,ours+bm25 --out "$OUT/synthetic_$TAG.json"
    $PY -m benchmarks.quality --model "$CRITIC" --tasks squad --limit 60 --threads 1 \
      --methods ours-sentence,ours+bm25 --out "$OUT/squad_$TAG.json"
    $PY -m benchmarks.quality --model "$CRITIC" --tasks needle --threads 1 --methods ours-sentence,ours+bm25 \
      --out "$OUT/needle_$TAG.json"
    $PY -m benchmarks.critic_dev --model "$CRITIC" --threads 1 --tasks chains --hops 1 4 \
      --out "$OUT/chains_$TAG.json"
    $PY -m benchmarks.critic_dev --model "$CRITIC" --threads 1 --tasks paraphrase squad --hops 1 \
      --out "$OUT/paraphrase_squad_$TAG.json"
  ) > "$OUT/lane_a_$TAG.log" 2>&1 &
  (
    $PY -m benchmarks.critic_dev --model "$CRITIC" --threads 1 --tasks hotpot --hops 1 2 \
      --out "$OUT/hotpot_dev_$TAG.json"
    $PY -m benchmarks.critic_dev --model "$CRITIC" --threads 1 --tasks hotpot --hotpot-split test --limit 300 \
      --hops 1 2 --out "$OUT/hotpot_test300_$TAG.json"
  ) > "$OUT/lane_b_$TAG.log" 2>&1 &
  wait
done

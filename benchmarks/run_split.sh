#!/usr/bin/env bash
# The quality benchmark as it was run for the README: single-threaded processes side by side (a 2-core CPU does
# more work this way than one process with two threads), then the parts merged into results/quality.json.
#
#   A: HotpotQA held-out (735 questions): our engine and the simple baselines
#   B: needles, multi-key, variable tracking, SQuAD: our engine and the simple baselines
#   C: the framework peers (EmbeddingsFilter, SentenceEmbeddingOptimizer, top-k RAG) on the first 300 HotpotQA
#      questions, 4K-token needles and 10 examples of the other tasks, then LongLLMLingua on the first 10 HotpotQA questions
#      (about 40 CPU-seconds per 1K tokens here); BM25 and our engine ride along in each part, so every peer is
#      compared with them on the same examples in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=benchmarks/results/parts
OURS=ours-sentence,ours-tags,ours+bm25,bm25,minilm-cosine,random
NEEDLE=ours-sentence,ours-tags,ours+bm25,bm25,random  # MiniLM cosine keeps every needle (previous runs): skipped
PEERS=langchain-embeddings-filter,llamaindex-sentence-optimizer,rag,bm25,ours+bm25,ours-sentence
mkdir -p "$OUT"
(
  $PY -m benchmarks.quality --tasks hotpotqa --threads 1 --methods "$OURS" --out "$OUT/hotpot_main.json"
) &
(
  $PY -m benchmarks.quality --tasks needle --threads 1 --methods "$NEEDLE" --out "$OUT/needle.json"
  $PY -m benchmarks.quality --tasks multikey,variable_tracking --limit 20 --threads 1 --methods "$OURS" \
    --out "$OUT/synthetic.json"
  $PY -m benchmarks.quality --tasks squad --limit 60 --threads 1 --methods "$OURS" --out "$OUT/squad.json"
) &
(
  $PY -m benchmarks.quality --tasks hotpotqa --limit 300 --threads 1 --methods "$PEERS" --out "$OUT/hotpot_peers.json"
  $PY -m benchmarks.quality --tasks needle --needle-lengths 4096 --threads 1 --methods "$PEERS" \
    --out "$OUT/needle_peers.json"
  $PY -m benchmarks.quality --tasks multikey,variable_tracking,squad --limit 10 --threads 1 --methods "$PEERS" \
    --out "$OUT/synthetic_squad_peers.json"
  $PY -m benchmarks.quality --tasks hotpotqa --limit 10 --threads 1 \
    --methods longllmlingua,bm25,ours+bm25,ours-sentence \
    --out "$OUT/hotpot_llmlingua.json"
) &
wait
$PY -m benchmarks.merge "$OUT"/hotpot_main.json "$OUT"/needle.json "$OUT"/synthetic.json "$OUT"/squad.json \
  "$OUT"/hotpot_peers.json "$OUT"/needle_peers.json "$OUT"/synthetic_squad_peers.json "$OUT"/hotpot_llmlingua.json \
  --out benchmarks/results/quality.json

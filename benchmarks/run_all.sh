#!/usr/bin/env bash
# Every benchmark, then the plots and RESULTS.md, from the repository root with the project's virtualenv.
#
#   benchmarks/run_all.sh                     # full run (hours on a 2-core CPU)
#   benchmarks/run_all.sh --quick             # small samples, under 10 minutes on a 2-core CPU
#   benchmarks/run_all.sh --model PATH        # another critic folder instead of the embedded default
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
ARGS=()
REPORT=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) ARGS+=(--quick); REPORT+=(--quick); shift ;;
    --model) ARGS+=(--model "$2"); shift 2 ;;
    *) echo "usage: $0 [--quick] [--model PATH]" >&2; exit 2 ;;
  esac
done
"$PY" -m benchmarks.quality "${ARGS[@]}"
"$PY" -m benchmarks.speed "${ARGS[@]}"
"$PY" -m benchmarks.report "${REPORT[@]}"

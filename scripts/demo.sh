#!/usr/bin/env bash
# Set up the environment (idempotent), then compress the bundled sample with the embedded default critic.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/cprs demo "$@"

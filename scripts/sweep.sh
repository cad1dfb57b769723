#!/usr/bin/env bash
# Sweep a grid of protocol jobs over GPU / CPU slots: see `bash scripts/sweep.sh --help` (scripts/sweep.py).
set -euo pipefail
USAGE="Usage: [TRAINERS=..] [DATASETS=..] [SEEDS=..] [STEPS=..] [GPUS=..] bash scripts/sweep.sh (see --help)"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The jobs run from the repository root: make the user's relative paths absolute first.
for name in DATA OUTPUT_ROOT SWEEP_LOGS RESULTS_DIR; do
    if [ -n "${!name:-}" ]; then
        export "$name=$(from_caller "${!name}")"
    fi
done
exec "$PYTHON" -m scripts.sweep "$@"

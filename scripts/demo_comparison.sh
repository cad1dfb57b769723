#!/usr/bin/env bash
# The demo's whole base-to-novel comparison in one command (docs/DEMO.md): zero-shot CLIP, CoOp, CoCoOp,
# MaPLe, IVLP and PromptSRC on the demo dataset, seeds 1-3, two jobs at a time on the CPU; then the table
# (Markdown, CSV) and the plot in $OUTPUT_ROOT/results/. Finished runs are skipped, so a re-run only adds
# what is missing. Every setting of scripts/sweep.sh can still be given (TRAINERS, SEEDS, GPUS, OUTPUT_ROOT).
set -euo pipefail
case "${1:-}" in
    -h|--help) sed -n '2,5p' "$0" | cut -c3-; exit 0 ;;
    "") ;;
    *) echo "error: demo_comparison.sh takes no arguments (settings come from the environment)" >&2; exit 2 ;;
esac
export TRAINERS="${TRAINERS:-ZeroshotCLIP,CoOp,CoCoOp,MaPLe,IVLP,PromptSRC}"
export SEEDS="${SEEDS:-1,2,3}"
export GPUS="${GPUS:-cpu,cpu}"
export DATASETS=demo STEPS=base2new
exec bash "$(dirname "${BASH_SOURCE[0]}")/sweep.sh"

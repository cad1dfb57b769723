#!/usr/bin/env bash
# The demo's four tables in one command (docs/DEMO.md), seeds 1-3, two jobs at a time on the CPU: base-to-novel
# (zero-shot CLIP, the prompt methods, IVLP, the adapters), then cross-dataset transfer, domain generalisation and
# few-shot learning (1-16 shots) of zero-shot CLIP, the linear probe, the prompt methods but IVLP and PromptSRC, and
# the adapters, each table as Markdown, CSV and PNG in $OUTPUT_ROOT/results/. Finished runs are skipped, so a re-run
# only adds what is missing. Settings: SEEDS, GPUS, OUTPUT_ROOT, DATA, and BASE2NEW_TRAINERS / TRAINERS for the methods.
set -euo pipefail
case "${1:-}" in
    -h|--help) sed -n '2,6p' "$0" | cut -c3-; exit 0 ;;
    "") ;;
    *) echo "error: demo_comparison.sh takes no arguments (settings come from the environment)" >&2; exit 2 ;;
esac
sweep="$(dirname "${BASH_SOURCE[0]}")/sweep.sh"
export SEEDS="${SEEDS:-1,2,3}"
export GPUS="${GPUS:-cpu,cpu}"
export DATASETS=demo SOURCE=demo
status=0
prompts=CoOp,CoCoOp,ProGrad,KgCoOp,MaPLe
adapters=CLIP_Adapter,TipAdapter,TipAdapterF
TRAINERS="${BASE2NEW_TRAINERS:-ZeroshotCLIP,$prompts,IVLP,PromptSRC,TCP,$adapters}" STEPS=base2new \
    bash "$sweep" || status=$?
TRAINERS="${TRAINERS:-ZeroshotCLIP,LinearProbeCLIP,$prompts,TCP,$adapters}" STEPS=xd,dg,fewshot \
    FEWSHOT_SHOTS="${FEWSHOT_SHOTS:-1,2,4,8,16}" bash "$sweep" || status=$?
exit "$status"

#!/usr/bin/env bash
# One paper table from its whole grid: bash scripts/table.sh base2new|xd|dg|fewshot (see --help).
set -euo pipefail
USAGE="Usage: [TRAINERS=..] [SEEDS=..] [GPUS=..] [DATA=..] bash scripts/table.sh base2new|xd|dg|fewshot

Runs every job of one of the papers' tables through scripts/sweep.sh (methods x datasets x seeds, x shots for
fewshot; one job per GPU slot; finished runs skipped, so a re-run completes what is missing) and writes the
table into \$OUTPUT_ROOT/results/<table>.{md,csv,png}:
  base2new  MaPLe's Table 1: base and novel classes of the 11 benchmarks (DATASETS)
  xd        its Table 2: trained on SOURCE (imagenet), evaluated on the 10 other benchmarks (XD_TARGETS)
  dg        its Table 3: trained on SOURCE, evaluated on ImageNet-V2, -Sketch, -A, -R (DG_TARGETS)
  fewshot   CoOp's curves: every dataset with FEWSHOT_SHOTS 1,2,4,8,16 shots per class
Default TRAINERS: ZeroshotCLIP,CoOp,CoCoOp,MaPLe (base2new, xd) and ZeroshotCLIP,LinearProbeCLIP,CoOp,CoCoOp,MaPLe
(dg, fewshot); SEEDS 1,2,3; GPUS 0. Every setting of scripts/sweep.sh applies (bash scripts/sweep.sh --help)."
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

expect_args 1 1 "$@"
case "$1" in
    base2new|xd) default_trainers=ZeroshotCLIP,CoOp,CoCoOp,MaPLe ;;
    dg|fewshot) default_trainers=ZeroshotCLIP,LinearProbeCLIP,CoOp,CoCoOp,MaPLe ;;
    *) die_usage "unknown table '$1': choose base2new, xd, dg or fewshot" ;;
esac
export STEPS="$1" TRAINERS="${TRAINERS:-$default_trainers}"
if [ "$1" = fewshot ]; then export FEWSHOT_SHOTS="${FEWSHOT_SHOTS:-1,2,4,8,16}"; fi
# lib.sh moved to the repository root: the user's relative paths are made absolute first, as sweep.sh does.
for name in DATA OUTPUT_ROOT SWEEP_LOGS RESULTS_DIR; do
    if [ -n "${!name:-}" ]; then export "$name=$(from_caller "${!name}")"; fi
done
exec bash "$REPO_ROOT/scripts/sweep.sh"

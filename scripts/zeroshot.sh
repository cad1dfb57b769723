#!/usr/bin/env bash
# Zero-shot CLIP with hand-crafted prompts (PROTOCOL.md §5.3, zsclip/zeroshot.sh). With SUB=base or
# SUB=new it evaluates the base-to-novel halves, which gives the "CLIP" row of the base-to-novel tables.
set -euo pipefail
USAGE="Usage: bash scripts/zeroshot.sh DATASET [SEED]

Evaluates ZeroshotCLIP (configs from configs/trainers/CoOp/, CFG default vit_b16) on DATASET:
  SUB=all (default): all classes, into \$OUTPUT_ROOT/ZeroshotCLIP/\$CFG/DATASET (no seed, as officially)
  SUB=base|new:      one half, into \$OUTPUT_ROOT/base2new/test_\$SUB/DATASET/shots_\$SHOTS/ZeroshotCLIP/\$CFG/seedSEED
then prints the accuracy. SEED defaults to 1. TRAINER is ignored."
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

expect_args 1 2 "$@"
DATASET="$1"
SEED="${2:-}"
check_dataset "$DATASET"
[ -z "$SEED" ] || check_uint SEED "$SEED"
TRAINER=ZeroshotCLIP
load_settings
resolve_cfg zeroshot "$DATASET"
collect_opts
SUB="${SUB:-all}"
case "$SUB" in
    all)
        DIR="$OUT/ZeroshotCLIP/$CFG/$DATASET"
        LABEL=zero-shot
        EXTRA=()
        ;;
    base|new)
        SEED="${SEED:-1}"
        DIR="$(base2new_dir "test_$SUB" "$DATASET" "$SEED")"
        if [ "$SUB" = base ]; then LABEL=base; else LABEL=novel; fi
        EXTRA=(DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES "$SUB")
        ;;
    *) die_usage "SUB must be 'all', 'base' or 'new', got '$SUB'" ;;
esac
check_only "$DIR" --test-log

base_cmd "$DATASET" "$SEED" "$DIR"
CMD+=(--eval-only ${EXTRA[@]+"${EXTRA[@]}"} ${OPTS[@]+"${OPTS[@]}"})
run_job "$LABEL" test "$DIR"

#!/usr/bin/env bash
# Zero-shot CLIP with hand-crafted prompts (PROTOCOL.md §5.3, zsclip/zeroshot.sh). With SUB=base or
# SUB=new it evaluates the base-to-novel halves, which gives the "CLIP" row of the base-to-novel tables
# (the same runs as base2new_train.sh / base2new_test.sh with TRAINER=ZeroshotCLIP).
set -euo pipefail
USAGE="Usage: bash scripts/zeroshot.sh DATASET [SEED]

Evaluates ZeroshotCLIP (configs from configs/trainers/CoOp/, CFG default vit_b16) on DATASET:
  SUB=all (default): all classes, into \$OUTPUT_ROOT/ZeroshotCLIP/\$CFG/DATASET (no seed, as officially)
  SUB=base|new:      one half, into \$OUTPUT_ROOT/base2new/test_\$SUB/DATASET/shots_\$SHOTS/ZeroshotCLIP/\$CFG/seedSEED
                     (the runs of TRAINER=ZeroshotCLIP base2new_train.sh / base2new_test.sh)
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
zeroshot_eval "${SUB:-all}" "$DATASET" "$SEED"

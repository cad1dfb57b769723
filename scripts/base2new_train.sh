#!/usr/bin/env bash
# Base-to-novel, step 1: train on the base classes of DATASET with SHOTS shots per class (PROTOCOL.md §5.1).
# The run folder's final test is the base accuracy.
set -euo pipefail
USAGE="Usage: bash scripts/base2new_train.sh DATASET SEED [KEY VALUE ...]

Trains TRAINER on the base half of DATASET's classes into
  \$OUTPUT_ROOT/base2new/train_base/DATASET/shots_\$SHOTS/\$TRAINER/\$CFG/seedSEED
then prints 'base accuracy: X%'. A folder without a result is resumed; a finished one is skipped.
Then run scripts/base2new_test.sh with the same arguments for the novel accuracy.
TRAINER=ZeroshotCLIP trains nothing: it evaluates zero-shot CLIP on the base classes into
  \$OUTPUT_ROOT/base2new/test_base/DATASET/shots_\$SHOTS/ZeroshotCLIP/\$CFG/seedSEED (as SUB=base scripts/zeroshot.sh)."
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

take_dataset_seed "$@"
shift 2
load_settings
resolve_cfg base2new "$DATASET"
collect_opts "$@"
if [ "$TRAINER" = ZeroshotCLIP ]; then
    # No model to train: the base accuracy is an evaluation of zero-shot CLIP on the base classes.
    zeroshot_eval base "$DATASET" "$SEED"
    exit 0
fi

DIR="$(base2new_dir train_base "$DATASET" "$SEED")"

base_cmd "$DATASET" "$SEED" "$DIR"
CMD+=(DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES base ${OPTS[@]+"${OPTS[@]}"})
run_job base train "$DIR"

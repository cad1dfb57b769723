#!/usr/bin/env bash
# Base-to-novel, step 2: evaluate the base-trained model on the novel classes (PROTOCOL.md §5.1).
set -euo pipefail
USAGE="Usage: bash scripts/base2new_test.sh DATASET SEED [KEY VALUE ...]

Evaluates epoch \$LOADEP of \$OUTPUT_ROOT/base2new/train_base/DATASET/shots_\$SHOTS/\$TRAINER/\$CFG/seedSEED
on the classes SUB (default new; 'base' re-tests the base classes) into
  \$OUTPUT_ROOT/base2new/test_\$SUB/DATASET/shots_\$SHOTS/\$TRAINER/\$CFG/seedSEED
then prints 'novel accuracy: X%' (or 'base accuracy'). Use the settings of the training run.
MODEL_DIR=PATH evaluates weights from elsewhere instead (scripts/reproduce.sh uses it).
TRAINER=ZeroshotCLIP loads no model: it evaluates zero-shot CLIP on the SUB classes (as scripts/zeroshot.sh)."
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

take_dataset_seed "$@"
shift 2
load_settings
resolve_cfg base2new "$DATASET"
collect_opts "$@"
SUB="${SUB:-new}"
case "$SUB" in
    new) LABEL=novel ;;
    base) LABEL=base ;;
    *) die_usage "SUB must be 'new' or 'base', got '$SUB'" ;;
esac
if [ "$TRAINER" = ZeroshotCLIP ]; then
    # No trained model to load: zero-shot CLIP is evaluated as it is.
    zeroshot_eval "$SUB" "$DATASET" "$SEED"
    exit 0
fi

DIR="$(base2new_dir "test_$SUB" "$DATASET" "$SEED")"
resolve_model_dir "$(base2new_dir train_base "$DATASET" "$SEED")" \
    "run scripts/base2new_train.sh $DATASET $SEED first, with the same TRAINER/CFG/SHOTS"
resolve_loadep

base_cmd "$DATASET" "$SEED" "$DIR"
CMD+=(--model-dir "$MODEL_DIR" --load-epoch "$LOADEP" --eval-only
      DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES "$SUB" ${OPTS[@]+"${OPTS[@]}"})
run_job "$LABEL" test "$DIR"

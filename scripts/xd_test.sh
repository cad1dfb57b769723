#!/usr/bin/env bash
# Cross-dataset / domain generalisation, step 2: evaluate the source-trained model on all test images of a
# target dataset (PROTOCOL.md §5.2; CoOp's eval.sh with TRAINER=CoOp). LOADEP defaults to the config's
# MAX_EPOCH, fixing the official scripts' hard-coded epoch 2 for 5-epoch configs (§8 item 26).
set -euo pipefail
USAGE="Usage: bash scripts/xd_test.sh DATASET SEED [KEY VALUE ...]

Evaluates \$OUTPUT_ROOT/\$SOURCE/\$TRAINER/\${CFG}_\${SHOTS}shots/seedSEED (SOURCE default imagenet; demo
for the demo datasets demo, demo_*) on all classes of the target DATASET into
  \$OUTPUT_ROOT/evaluation/\$TRAINER/\${CFG}_\${SHOTS}shots/DATASET/seedSEED
then prints 'DATASET accuracy: X%'. Use the settings of the training run (CoOp: NCTX, CSC, CTP too).
MODEL_DIR=PATH evaluates weights from elsewhere instead (scripts/reproduce.sh uses it)."
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

take_dataset_seed "$@"
shift 2
if [ -z "${SOURCE:-}" ]; then
    if is_demo_dataset "$DATASET"; then SOURCE=demo; else SOURCE=imagenet; fi
fi
check_dataset "$SOURCE"
load_settings
resolve_cfg xd "$SOURCE"
collect_opts "$@"
method_settings

DIR="$(evaluation_dir "$DATASET" "$SEED")"
resolve_model_dir "$(all_class_dir "$SOURCE" "$SEED")" \
    "run scripts/xd_train.sh $SOURCE $SEED first, with the same TRAINER/CFG/SHOTS"
resolve_loadep

base_cmd "$DATASET" "$SEED" "$DIR"
# No DATASET.NUM_SHOTS: the target is evaluated on its full test set with all its classes.
CMD+=(--model-dir "$MODEL_DIR" --load-epoch "$LOADEP" --eval-only
      ${METHOD_OPTS[@]+"${METHOD_OPTS[@]}"} ${OPTS[@]+"${OPTS[@]}"})
run_job "$DATASET" test "$DIR"

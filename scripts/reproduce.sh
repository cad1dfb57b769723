#!/usr/bin/env bash
# Evaluate released weights (PROTOCOL.md §5.1-5.3 reproduce_*.sh), one protocol per PROTOCOL value.
set -euo pipefail
USAGE="Usage: PROTOCOL=base2new|xd|fewshot bash scripts/reproduce.sh DATASET SEED WEIGHTS_PATH [KEY VALUE ...]

  base2new (default): weights in WEIGHTS_PATH/base/seedSEED; evaluates the base and the novel classes into
                      \$OUTPUT_ROOT/base2new/test_base/... and test_new/... (parse both with
                      python parse_test_res.py --protocol base2new \$OUTPUT_ROOT/base2new)
  xd:                 weights in WEIGHTS_PATH/seedSEED; evaluates target DATASET into \$OUTPUT_ROOT/evaluation/...
  fewshot:            weights in WEIGHTS_PATH/\${SHOTS}shot/seedSEED; evaluates all classes into
                      \$OUTPUT_ROOT/few_shot/DATASET/\$TRAINER/\${CFG}_\${SHOTS}shots/seedSEED
TRAINER and CFG select the method and config the weights were trained with; LOADEP defaults to its MAX_EPOCH."
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

expect_args 3 -1 "$@"
DATASET="$1"
SEED="$2"
WEIGHTS="$(from_caller "$3")"
shift 3
check_dataset "$DATASET"
check_uint SEED "$SEED"
[ -d "$WEIGHTS" ] || die "WEIGHTS_PATH $WEIGHTS is not a folder"
SCRIPTS="$REPO_ROOT/scripts"
load_settings
# The evaluation scripts below run from the repository root: hand them absolute paths.
export DATA OUTPUT_ROOT="$OUT"

case "${PROTOCOL:-base2new}" in
    base2new)
        # The official scripts write base results to test_base/ (and their docs parse train_base/, §8 item 30);
        # the protocol table of parse_test_res.py reads test_base/ when there is no training log.
        for sub in base new; do
            SUB="$sub" MODEL_DIR="$WEIGHTS/base/seed$SEED" bash "$SCRIPTS/base2new_test.sh" "$DATASET" "$SEED" "$@"
        done
        ;;
    xd)
        MODEL_DIR="$WEIGHTS/seed$SEED" bash "$SCRIPTS/xd_test.sh" "$DATASET" "$SEED" "$@"
        ;;
    fewshot)
        resolve_cfg fewshot "$DATASET"
        collect_opts "$@"
        method_settings
        MODEL_DIR="$WEIGHTS/${SHOTS}shot/seed$SEED"
        require_model_dir "$MODEL_DIR" "expected the released layout WEIGHTS_PATH/<K>shot/seed<S>"
        resolve_loadep
        DIR="$OUT/few_shot/$DATASET/$TRAINER/${CFG}_${SHOTS}shots${METHOD_SUFFIX}/seed$SEED"
        base_cmd "$DATASET" "$SEED" "$DIR"
        CMD+=(--model-dir "$MODEL_DIR" --load-epoch "$LOADEP" --eval-only DATASET.NUM_SHOTS "$SHOTS"
              ${METHOD_OPTS[@]+"${METHOD_OPTS[@]}"} ${OPTS[@]+"${OPTS[@]}"})
        run_job "$DATASET" test "$DIR"
        ;;
    *) die_usage "PROTOCOL must be base2new, xd or fewshot, got '${PROTOCOL}'" ;;
esac

#!/usr/bin/env bash
# Few-shot learning: train and test on all classes of DATASET with SHOTS shots per class (PROTOCOL.md §5.3,
# PromptSRC few_shot.sh and CoOp main.sh, one seed per call). The final test of training is the result.
set -euo pipefail
USAGE="Usage: bash scripts/fewshot.sh DATASET SEED [KEY VALUE ...]

Trains TRAINER (PromptSRC's few-shot config by default for PromptSRC) on all classes into
  \$OUTPUT_ROOT/DATASET/\$TRAINER/\${CFG}_\${SHOTS}shots/seedSEED
  (CoOp: .../\${CFG}_\${SHOTS}shots/nctx\$NCTX_csc\$CSC_ctp\$CTP/seedSEED; NCTX=16 CSC=False CTP=end)
then prints 'DATASET accuracy: X%'. Officially: SHOTS in 1 2 4 8 16, seeds 1 2 3."
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

train_all_classes fewshot "$@"

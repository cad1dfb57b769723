#!/usr/bin/env bash
# Cross-dataset / domain generalisation, step 1: train on all classes of the source (ImageNet) with SHOTS
# shots per class (PROTOCOL.md §5.2). Also CoOp's main.sh protocol with TRAINER=CoOp (NCTX, CSC, CTP).
set -euo pipefail
USAGE="Usage: bash scripts/xd_train.sh DATASET SEED [KEY VALUE ...]

Trains TRAINER on all classes of DATASET (the source, officially imagenet) into
  \$OUTPUT_ROOT/DATASET/\$TRAINER/\${CFG}_\${SHOTS}shots/seedSEED
  (CoOp: .../\${CFG}_\${SHOTS}shots/nctx\$NCTX_csc\$CSC_ctp\$CTP/seedSEED; NCTX=16 CSC=False CTP=end)
then prints 'DATASET accuracy: X%'. Evaluate on targets with scripts/xd_test.sh."
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

train_all_classes xd "$@"

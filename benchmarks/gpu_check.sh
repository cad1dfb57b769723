#!/usr/bin/env bash
# The GPU check: at most 10 minutes on one CUDA GPU, run as it is (no argument) from any directory:
#   1. the test suite's CUDA-marked tests (`pytest -m cuda`: every trainer trains and evaluates in fp32, fp16,
#      amp and bf16 on CUDA; every exact speed-up gives the plain path's logits on CUDA; two processes on one
#      GPU match one process);
#   2. the headline benchmark on CUDA: MaPLe and CoOp (ViT-B/16 shape, random weights), a training step at 500
#      classes and evaluation at 1000 classes, ours and the plain path, with the peak CUDA memory of each phase;
# then prints one table (benchmarks/gpu_table.py). Results go to $GPU_CHECK_DIR (default ./gpu_check_results).
# The exit status is non-zero when a test failed or a step ran out of time; the table is printed regardless.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${GPU_CHECK_DIR:-gpu_check_results}
mkdir -p "$RESULTS"

if ! python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: error: no CUDA GPU is visible to torch (torch.cuda.is_available() is False)" >&2
    exit 2
fi

status=0
echo "== 1/2 CUDA tests (at most 330 s)"
timeout 330 python3 -m pytest -q -m cuda tests/ -p no:cacheprovider 2>&1 | tee "$RESULTS/pytest.txt" | tail -n 25
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 2/2 headline benchmark (at most 2 x 120 s)"
bench() {  # name, config file
    timeout 120 python3 benchmarks/bench_trainers.py --trainer "$1" --config-file "$2" --device cuda \
        --train-classes 500 --eval-classes 1000 --plain --warmup 1 --steps 3 --eval-images 500 \
        --json "$RESULTS/$1.json" > "$RESULTS/$1.txt" 2>&1 || { status=1; tail -n 20 "$RESULTS/$1.txt"; }
}
bench MaPLe configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml
bench CoOp configs/trainers/CoOp/vit_b16.yaml

python3 benchmarks/gpu_table.py "$RESULTS/pytest.txt" "$RESULTS/MaPLe.json" "$RESULTS/CoOp.json"
exit $status

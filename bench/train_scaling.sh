#!/usr/bin/env bash
# Stage-2 training throughput, one process against two (torchrun; gloo on the CPU, NCCL on GPUs),
# at the same global batch. Prints samples/s of each from metrics.jsonl (steps 21-40: the first
# 20 steps are warm-up).
#   bench/train_scaling.sh [PRESET] [BATCH] [DEVICE]      e.g. bench/train_scaling.sh shapes64 12 cpu
set -euo pipefail
PRESET=${1:-shapes64}
BATCH=${2:-12}
DEVICE=${3:-cpu}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS=1
common=(--preset "$PRESET" --batch-size "$BATCH" --steps 40 --warmup-steps 1 --checkpoint-every 1000
        --preview-every 1000 --threads 1 --device "$DEVICE")
# a tokenizer of the right architecture (its weights do not matter for speed)
phenaki train tokenizer "$WORK/tok" --preset "$PRESET" --steps 1 --batch-size 2 --threads 1 --device "$DEVICE" >/dev/null 2>&1
tok=(--tokenizer "$WORK/tok/bundle.safetensors")
phenaki train transformer "$WORK/one" "${common[@]}" "${tok[@]}" >/dev/null 2>&1
torchrun --standalone --nproc_per_node 2 -m phenaki_core.cli train transformer "$WORK/two" "${common[@]}" "${tok[@]}" \
  >/dev/null 2>&1
for run in one two; do
  python - "$WORK/$run/metrics.jsonl" "$run" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
last = [r for r in records if r["step"] == 40][0]
print(f"{sys.argv[2]} process(es): {last['samples_per_s']:.2f} samples/s (steps 21-40)")
PY
done

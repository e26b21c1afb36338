#!/usr/bin/env bash
# One short lent-GPU session, in one command: a stage-1 (tokenizer) continuation run of the
# bundled model, the tokenizer eval of the result next to the bundled one, and the config-L
# benchmark against phenaki-pytorch (bench/bench.py). Everything worth keeping lands in $OUT.
#
#   OUT=out TRAIN_SECONDS=240 bash bench/gpu_session.sh
#
# Stage 2 needs the text encoder, which this script does not assume is installed; run it with
# scripts/gpu_train.sh where the encoder is. The stage-1 run is scripts/gpu_train.sh (a probe
# sizes it to TRAIN_SECONDS). Each step has its own time limit, so one failure still leaves the
# others' results.
set -u
OUT=${OUT:-out}
TRAIN_SECONDS=${TRAIN_SECONDS:-240}
BATCH=${BATCH:-64}
LR=${LR:-8e-4}
BENCH_SECONDS=${BENCH_SECONDS:-200}
DEVICE=${DEVICE:-cuda}
BENCH_ARGS=${BENCH_ARGS:---config L --peer --repeats 3 --budget 6}
INIT=phenaki_core/weights/shapes64.safetensors
RUN=runs/tok_gpu
mkdir -p "$OUT" runs
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
say() { echo "[$(date +%T)] $*"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
if [ -d .whl ]; then  # the peer and its pure-Python dependencies, carried as wheels
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

# stage 1, with the losses of scripts/train_shapes64.sh
OUT="$OUT" TRAIN_SECONDS="$TRAIN_SECONDS" BATCH="$BATCH" LR="$LR" DEVICE="$DEVICE" INIT="$INIT" \
    bash scripts/gpu_train.sh tokenizer "$RUN" \
    --commit-weight 0.02 --entropy-weight 0.01 --foreground-weight 10 --halo-weight 10

say "tokenizer eval: bundled, then the new run"
timeout 90 python3 -m phenaki_core.cli eval --tokenizer-only --checkpoint "$INIT" --device "$DEVICE" --dtype fp32 \
    --out "$OUT/tok_eval_bundled.json" > "$OUT/tok_eval.log" 2>&1
timeout 90 python3 -m phenaki_core.cli eval --tokenizer-only --checkpoint "$RUN/bundle.safetensors" --device "$DEVICE" \
    --dtype fp32 --out "$OUT/tok_eval_gpu.json" >> "$OUT/tok_eval.log" 2>&1
tail -4 "$OUT/tok_eval.log"

say "benchmark: $BENCH_ARGS"
timeout "$BENCH_SECONDS" python3 bench/bench.py $BENCH_ARGS --device "$DEVICE" --json "$OUT/bench.json" \
    > "$OUT/bench.log" 2>&1
tail -25 "$OUT/bench.log"
(cd "$OUT" && shopt -s nullglob && small=(*.log *.jsonl *.json) && tar czf logs.tgz "${small[@]}" && rm -f "${small[@]}")
say "done"; ls -la "$OUT"

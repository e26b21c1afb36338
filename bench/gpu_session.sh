#!/usr/bin/env bash
# One short lent-GPU session, in one command: a stage-1 (tokenizer) continuation run of the
# bundled model, the tokenizer eval of the result next to the bundled one, and the config-L
# benchmark against phenaki-pytorch (bench/bench.py). Everything worth keeping lands in $OUT.
#
#   OUT=out TRAIN_SECONDS=240 bash bench/gpu_session.sh
#
# Stage 2 needs the text encoder, which this script does not assume is installed; run it where
# the encoder is (see the README's model card). The stage-1 run length is set from a short probe
# of this machine's throughput so that its cosine schedule ends inside TRAIN_SECONDS. Each step
# has its own time limit, so one failure still leaves the others' results.
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
phenaki() { python3 -m phenaki_core.cli "$@"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
if [ -d .whl ]; then  # the peer and its pure-Python dependencies, carried as wheels
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

# the stage-1 losses of scripts/train_shapes64.sh
LOSSES=(--commit-weight 0.02 --entropy-weight 0.01 --foreground-weight 10 --halo-weight 10)
COMMON=(--preset shapes64 --init-from "$INIT" --batch-size "$BATCH" --lr "$LR" "${LOSSES[@]}"
        --num-workers 8 --device "$DEVICE" --precision fp32 --preview-every 1000000 --log-every 20)

say "probe: 60 steps at batch $BATCH"
timeout 120 python3 -m phenaki_core.cli train tokenizer runs/tok_probe "${COMMON[@]}" --steps 60 \
    --warmup-steps 10 --checkpoint-every 1000000 --no-resume > "$OUT/probe.log" 2>&1
RATE=$(python3 - <<'EOF'
import json
rows = [json.loads(l) for l in open("runs/tok_probe/metrics.jsonl")]
print(rows[-1]["samples_per_s"])
EOF
) || RATE=""
if [ -z "$RATE" ]; then say "probe failed:"; tail -20 "$OUT/probe.log"; RATE=64; fi
STEPS=$(python3 -c "print(max(100, int($RATE / $BATCH * ($TRAIN_SECONDS - 25) * 0.9)))")
say "probe: $RATE samples/s -> $STEPS steps"

say "stage 1: $STEPS steps"
timeout $((TRAIN_SECONDS + 90)) python3 -m phenaki_core.cli train tokenizer "$RUN" "${COMMON[@]}" \
    --steps "$STEPS" --warmup-steps 100 --checkpoint-every 1000 --max-minutes "$(python3 -c "print($TRAIN_SECONDS / 60)")" \
    --no-resume 2>&1 | tr '\r' '\n' | grep -v "it/s\]$\|step/s" > "$OUT/stage1.log"
tail -5 "$OUT/stage1.log"
cp "$RUN/metrics.jsonl" "$OUT/stage1_metrics.jsonl" 2>/dev/null

say "tokenizer eval: bundled, then the new run"
timeout 90 python3 -m phenaki_core.cli eval --tokenizer-only --checkpoint "$INIT" --device "$DEVICE" --dtype fp32 \
    --out "$OUT/tok_eval_bundled.json" > "$OUT/tok_eval.log" 2>&1
timeout 90 python3 -m phenaki_core.cli eval --tokenizer-only --checkpoint "$RUN/bundle.safetensors" --device "$DEVICE" \
    --dtype fp32 --out "$OUT/tok_eval_gpu.json" >> "$OUT/tok_eval.log" 2>&1
tail -4 "$OUT/tok_eval.log"
# the bundle (fp32 EMA weights) comes back in pieces under the 16 MiB per-file limit
[ -f "$RUN/bundle.safetensors" ] && split -b 15M "$RUN/bundle.safetensors" "$OUT/tok_gpu.part_"

say "benchmark: $BENCH_ARGS"
timeout "$BENCH_SECONDS" python3 bench/bench.py $BENCH_ARGS --device "$DEVICE" --json "$OUT/bench.json" \
    > "$OUT/bench.log" 2>&1
tail -25 "$OUT/bench.log"
(cd "$OUT" && tar czf logs.tgz *.log *.jsonl *.json && rm -f *.log *.jsonl *.json)
say "done"; ls -la "$OUT"

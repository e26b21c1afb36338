#!/usr/bin/env bash
# One prepared command for a rare GPU: everything the sampling and training issues need measured,
# in about 7 minutes on an H100/H200, written into one folder.
#
#   OUT=out bash bench/gpu_check.sh              # on the GPU machine
#   OUT=/tmp/dry DRY_RUN=1 bash bench/gpu_check.sh   # CPU dry run, tiny preset, seconds (CI runs this)
#
# What lands in $OUT, packed into one gpu_check.tgz at the end (each step has its own time limit, so
# one failure still leaves the others):
#   bench_sample.json/.log   config L sampling b1 and b8: ours bf16 and fp32 (eager SDPA, eager Flex,
#                            CUDA graphs with SDPA and with Flex), the peer at fp32, TF32 and bf16; ratios against the
#                            peer's fastest; peak memory; % of the measured bf16 matmul peak
#   bench_train.json/.log    config L MaskGit and C-ViViT train steps b8, ours and the peer, and a
#                            per-op profile of one step of each (device time per op family)
#   agreement.json           bf16 vs fp32: step-0 logits error, argmax and token agreement
#   attention.json           one self-attention: dense-bias SDPA, cuDNN, Flex with the table, no-bias floor
#   story.json               the bundled model's 3-scene story, sampling + decode, warm: eager and CUDA graphs
#   profile.json             one eager bf16 sample: device time by matmul / attention / sampler tail /
#                            elementwise / host gaps
#   torchrun.log             a one-process torchrun training run: joins a process group (NCCL on the GPU)
#   comfy_cuda.json          the API workflows through ComfyUI's model management at dtype auto and fp16
#                            (warm time per node), and whether VRAM returns once ComfyUI unloads them
#   env.txt                  the GPU, driver and torch
# The peer runs when its wheels are carried in .whl/, the ComfyUI step when a ComfyUI source is in
# .gpu_carry/ComfyUI (bench/prepare_gpu_check.sh puts both there; carry ".whl" and ".gpu_carry").
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
say() { echo "[$(date +%T)] $*"; }

if [ "${DRY_RUN:-0}" = 1 ]; then
    DEVICE=cpu CONFIG=tiny PEER="" DTYPES=fp32 VARIANTS=eager-sdpa,eager-flex BATCHES=1,2 REPEATS=1 LIMIT=120
    BENCH_CONFIG="--quick"
else
    DEVICE=cuda CONFIG=L DTYPES=bf16,fp32 VARIANTS=eager-sdpa,eager-flex,graphs-sdpa,graphs-flex BATCHES=1,8 REPEATS=5 LIMIT=300
    BENCH_CONFIG="--config L"
    PEER=""
    if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then  # the peer and its pure-Python dependencies
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/peer_site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/peer_site" && PEER="--peer"
    fi
fi

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
  echo "peer: ${PEER:-not run}"; } | tee "$OUT/env.txt"

say "sampling rows"
timeout "$LIMIT" python3 bench/bench.py $BENCH_CONFIG --device "$DEVICE" $PEER --only sample \
    --sample-batches "$BATCHES" --dtypes "$DTYPES" --variants "$VARIANTS" --repeats "$REPEATS" --budget 0 \
    --json "$OUT/bench_sample.json" > "$OUT/bench_sample.log" 2>&1
echo "exit $?"; tail -20 "$OUT/bench_sample.log"

say "training rows"
timeout 120 python3 bench/bench.py $BENCH_CONFIG --device "$DEVICE" $PEER ${PEER:+--peer-precisions fp32,bf16} \
    --only maskgit_train,cvivit_train --dtypes "$DTYPES" --repeats "$REPEATS" --budget 0 --profile \
    --json "$OUT/bench_train.json" > "$OUT/bench_train.log" 2>&1
echo "exit $?"; tail -8 "$OUT/bench_train.log"

for what in agreement attention profile story; do
    say "$what"
    timeout 90 python3 bench/gpu_extras.py "$what" --config "$CONFIG" --device "$DEVICE" --batches "$BATCHES" \
        --repeats "$REPEATS" --json "$OUT/$what.json" > "$OUT/$what.log" 2>&1
    echo "exit $?"; tail -4 "$OUT/$what.log"
done
say "torchrun, one process: the trainer's process group and DDP path (NCCL on a GPU, gloo on the CPU)"
RUN_DIR=${TMPDIR:-/tmp}/phenaki_torchrun_check
timeout 90 python3 -m torch.distributed.run --standalone --nproc_per_node 1 -m phenaki_core.cli train tokenizer \
    "$RUN_DIR" --preset tiny-shapes --steps 20 --batch-size 4 --checkpoint-every 20 --preview-every 1000 \
    --device "$DEVICE" --no-resume > "$OUT/torchrun.log" 2>&1
echo "exit $?"; tr '\r' '\n' < "$OUT/torchrun.log" | grep -a "joined process group\|^step 20 loss"
rm -rf "$RUN_DIR"
COMFY_DIR=${COMFY_DIR:-.gpu_carry/ComfyUI}
if [ -f "$COMFY_DIR/folder_paths.py" ]; then
    say "the API workflows through ComfyUI's model management (dtype auto and fp16), then unload"
    timeout 150 python3 bench/comfy_cuda_check.py --comfy "$COMFY_DIR" --json "$OUT/comfy_cuda.json" \
        ${COMFY_DTYPES:+--dtypes "$COMFY_DTYPES"} > "$OUT/comfy_cuda.log" 2>&1
    echo "exit $?"; tail -12 "$OUT/comfy_cuda.log"
else
    say "no ComfyUI source at $COMFY_DIR (bench/prepare_gpu_check.sh carries one): ComfyUI step skipped"
fi
# The device hands back at most 8 files from $OUT: everything goes back as one archive.
(cd "$OUT" && shopt -s nullglob && files=(*) && tar czf gpu_check.tgz "${files[@]}" && rm -rf "${files[@]}")
say "done"; tar tzvf "$OUT/gpu_check.tgz"

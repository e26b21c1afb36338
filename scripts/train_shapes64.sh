#!/usr/bin/env bash
# The recipe of the bundled model (phenaki_core/weights/shapes64.safetensors), stage by stage.
# Every step resumes where it stopped if re-run, so it can be interrupted at any time.
#   RUNS=runs THREADS=1 PROCS=2 scripts/train_shapes64.sh
# THREADS: torch threads per process. PROCS: stage-2 processes (torchrun, data-parallel; gloo on the
# CPU). On a 2-core CPU, THREADS=1 PROCS=2 is fastest (two processes of one thread: 1.7x one process).
# The shipped model's EMA used a fixed decay from the first step; the trainer now warms the decay up
# ((1 + n) / (10 + n) until it reaches --ema-decay), so a re-run's EMA weights differ slightly.
# Ctrl-C saves a checkpoint and prints the command that resumes; re-running this script resumes too.
set -euo pipefail
RUNS=${RUNS:-runs}
THREADS=${THREADS:-1}
TOK_STEPS=${TOK_STEPS:-3000}
T2V_STEPS=${T2V_STEPS:-2200}
TOK2_STEPS=${TOK2_STEPS:-5500}
T2V2_STEPS=${T2V2_STEPS:-3300}
TOK3_STEPS=${TOK3_STEPS:-4500}
T2V3_STEPS=${T2V3_STEPS:-4200}
PROCS=${PROCS:-1}
TOK_MINUTES=${TOK_MINUTES:-600}
T2V_MINUTES=${T2V_MINUTES:-600}
export OMP_NUM_THREADS=$THREADS
DEVICE=${DEVICE:-auto}
GPU_DEVICE=${GPU_DEVICE:-cuda}

# stage 1: the C-ViViT tokenizer
phenaki train tokenizer "$RUNS/tok" --preset shapes64 --steps "$TOK_STEPS" --batch-size 8 --lr 1.5e-3 \
  --warmup-steps 100 --commit-weight 0.02 --entropy-weight 0.01 --foreground-weight 10 --checkpoint-every 100 \
  --preview-every 500 \
  --threads "$THREADS" --device "$DEVICE" \
  --max-minutes "$TOK_MINUTES"

# stage 2: MaskGit + token critic on the frozen tokenizer, MiniLM text frozen (batch 12 is global)
torchrun --standalone --nproc_per_node "$PROCS" -m phenaki_core.cli train transformer "$RUNS/t2v" --preset shapes64 \
  --tokenizer "$RUNS/tok/bundle.safetensors" --steps "$T2V_STEPS" --batch-size 12 --lr 8e-4 --warmup-steps 100 \
  --checkpoint-every 100 --preview-every 500 --threads "$THREADS" --device "$DEVICE" --max-minutes "$T2V_MINUTES"

# Both stages continued: each run warm-starts from the previous one (a fresh schedule), data-parallel.
continue_tokenizer() {  # RUN FROM STEPS LR
  torchrun --standalone --nproc_per_node "$PROCS" -m phenaki_core.cli train tokenizer "$RUNS/$1" --preset shapes64 \
    --init-from "$RUNS/$2/bundle.safetensors" --steps "$3" --batch-size 8 --lr "$4" --warmup-steps 50 \
    --commit-weight 0.02 --entropy-weight 0.01 --foreground-weight 10 --halo-weight 10 --checkpoint-every 100 \
    --preview-every 1000 --threads "$THREADS" --device "$DEVICE" --max-minutes "$TOK_MINUTES"
}
continue_transformer() {  # RUN FROM TOKENIZER STEPS
  torchrun --standalone --nproc_per_node "$PROCS" -m phenaki_core.cli train transformer "$RUNS/$1" --preset shapes64 \
    --init-from "$RUNS/$2/bundle.safetensors" --tokenizer "$RUNS/$3/bundle.safetensors" --steps "$4" \
    --batch-size 12 --lr 8e-4 --warmup-steps 100 --checkpoint-every 100 --preview-every 500 --threads "$THREADS" \
    --device "$DEVICE" --max-minutes "$T2V_MINUTES"
}

# stage 1, second run: a symmetric pixel weighting. Weighing only the object's pixels (above) teaches
# colour fast but bloats objects into round blobs; --halo-weight also weighs colour drawn on the
# background, which sharpens edges.
continue_tokenizer tok2 tok "$TOK2_STEPS" 1e-3
# stage 2, second run: on the retrained tokenizer
continue_transformer t2v2 t2v tok2 "$T2V2_STEPS"
# stage 1, third run: the same settings at a lower peak learning rate (shape readback 46% -> 65%)
continue_tokenizer tok3 tok2 "$TOK3_STEPS" 6e-4
# stage 2, third run: on the third tokenizer
continue_transformer t2v3 t2v2 tok3 "$T2V3_STEPS"

# Runs 7 and 8 ran on one GPU (an H100): batch 64, 8 data workers, fp32. Both warm-start from run 6's
# fp16 EMA export (the previously shipped file). On a CPU they would take hours (GPU_DEVICE=cpu).
phenaki export "$RUNS/t2v3/bundle.safetensors" "$RUNS/t2v3_fp16.safetensors" --dtype fp16
GPU_RUN=(--preset shapes64 --init-from "$RUNS/t2v3_fp16.safetensors" --batch-size 64 --lr 8e-4 --warmup-steps 100
         --num-workers 8 --precision fp32 --checkpoint-every 1000 --preview-every 1000000 --device "$GPU_DEVICE")
# stage 1, fourth run: 5,135 steps (3.6 min on the H100); shape readback 65% -> 89%
phenaki train tokenizer "$RUNS/tok4" "${GPU_RUN[@]}" --steps 5135 \
  --commit-weight 0.02 --entropy-weight 0.01 --foreground-weight 10 --halo-weight 10
phenaki export "$RUNS/tok4/bundle.safetensors" "$RUNS/tok4_fp16.safetensors" --dtype fp16
# stage 2, fourth run: a 2,560-step schedule stopped at step 2,054 (5.5 min on the H100, its time limit)
phenaki train transformer "$RUNS/t2v4" "${GPU_RUN[@]}" --tokenizer "$RUNS/tok4_fp16.safetensors" \
  --steps 2560 --stop-at 2054

phenaki export "$RUNS/t2v4/bundle.safetensors" "$RUNS/t2v4_fp16.safetensors" --dtype fp16
# stage 2, fifth run (CPU, 2 processes): the wider caption vocabulary (everyday shades, more nouns,
# verbs and sentence forms), warm-started from run 8's export, on the same tokenizer (run 7's)
torchrun --standalone --nproc_per_node "$PROCS" -m phenaki_core.cli train transformer "$RUNS/t2v5" --preset shapes64 \
  --init-from "$RUNS/t2v4_fp16.safetensors" --tokenizer "$RUNS/t2v4_fp16.safetensors" --steps 4000 --batch-size 12 \
  --lr 3e-4 --warmup-steps 50 --checkpoint-every 100 --preview-every 1000 --threads "$THREADS" --device "$DEVICE"
phenaki export "$RUNS/t2v5/bundle.safetensors" "$RUNS/t2v5_fp16.safetensors" --dtype fp16
# Runs 10 and 11 (CPU, one process of one thread each, side by side on a 2-core CPU; --precision
# auto is bf16 on a CPU with AVX512-BF16 or AMX), both warm-started from run 9's export (the
# previously shipped file), on its tokenizer's unchanged encoder:
# stage 2, tenth run: half of the reworded captions typed the way people type prompts (tag lists,
# commands, tenses, adverbs, frame words, casing, punctuation, typos; --typed-share 0.5, the default)
phenaki train transformer "$RUNS/t2v6" --preset shapes64 --init-from "$RUNS/t2v5_fp16.safetensors" \
  --tokenizer "$RUNS/t2v5_fp16.safetensors" --steps 4500 --batch-size 12 --lr 3e-4 --warmup-steps 50 \
  --checkpoint-every 100 --preview-every 1000000 --threads "$THREADS" --device "$DEVICE" --precision auto
# stage 1, eleventh run: the decoder alone, with a new pixel refiner (width 32); the encoder and so
# every token id stay bit-identical, so run 10's transformer reads its codes unchanged
phenaki train tokenizer "$RUNS/dec1" --init-from "$RUNS/t2v5_fp16.safetensors" --decoder-only --pixel-refiner 32 \
  --steps 3000 --batch-size 8 --lr 5e-4 --warmup-steps 50 --commit-weight 0.02 --entropy-weight 0.01 \
  --foreground-weight 10 --halo-weight 10 --checkpoint-every 100 --preview-every 1000000 --threads "$THREADS" \
  --device "$DEVICE" --precision auto
# ship run 10's EMA weights with run 11's decoder, in fp16
phenaki export "$RUNS/t2v6/bundle.safetensors" phenaki_core/weights/shapes64.safetensors --dtype fp16 \
  --decoder-from "$RUNS/dec1/bundle.safetensors"

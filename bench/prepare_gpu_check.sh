#!/usr/bin/env bash
# Run on a machine with package-registry access, before a GPU check. The GPU machine reaches no
# registry, so what bench/gpu_check.sh needs beyond torch travels with the checkout, in ignored
# paths (pass both in the device tool's carry list; about 25 MiB):
#   .whl/         phenaki-pytorch 0.5.0 (the peer) and its pure-Python dependencies, without torch
#   .gpu_carry/   ComfyUI/ (its comfy package, folder_paths and node_helpers, from a ComfyUI source tree given as
#                 COMFY_DIR) and prompts.safetensors (the API workflows' prompts, MiniLM-encoded, in
#                 case the GPU machine lacks the text-encoder package)
#
#   COMFY_DIR=path/to/ComfyUI bash bench/prepare_gpu_check.sh
set -eu
mkdir -p .whl .gpu_carry
python3 -m pip download -q --no-deps --dest .whl \
    phenaki-pytorch==0.5.0 vector-quantize-pytorch==1.32.0 einx==0.4.3 torch-einops-utils==0.2.0 \
    ema-pytorch==0.8.3 beartype==0.23.1 frozendict==2.5.1 loguru==0.7.3 einops==0.8.2
if [ -n "${COMFY_DIR:-}" ]; then
    rm -rf .gpu_carry/ComfyUI && mkdir -p .gpu_carry/ComfyUI
    cp -r "$COMFY_DIR/comfy" "$COMFY_DIR/folder_paths.py" "$COMFY_DIR/comfyui_version.py" "$COMFY_DIR/node_helpers.py" \
        .gpu_carry/ComfyUI/
    find .gpu_carry/ComfyUI -name __pycache__ -prune -exec rm -rf {} +
fi
python3 bench/comfy_cuda_check.py --prepare-text .gpu_carry/prompts.safetensors
du -sh .whl .gpu_carry

#!/usr/bin/env bash
# Run on a machine with package-registry access, before a GPU check: the GPU machine reaches no
# registry, so what bench/gpu_check.sh needs beyond torch travels with the checkout (ignored paths):
#   .whl/   phenaki-pytorch 0.5.0 (the peer) and its pure-Python dependencies, without torch
# Then pass ".whl" in the device tool's carry list.
set -eu
mkdir -p .whl
python3 -m pip download -q --no-deps --dest .whl \
    phenaki-pytorch==0.5.0 vector-quantize-pytorch==1.32.0 einx==0.4.3 torch-einops-utils==0.2.0 \
    ema-pytorch==0.8.3 beartype==0.23.1 frozendict==2.5.1 loguru==0.7.3 einops==0.8.2
du -sh .whl && ls .whl

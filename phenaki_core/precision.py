"""What ``auto`` precision means: bf16 where the hardware has bf16 matrix units, fp32 elsewhere.

One rule for training (``precision="auto"``: bf16 autocast) and for inference (``dtype="auto"``:
bf16 weights), decided by what the device itself reports, never by a list of model names:

- CUDA: bf16 when the GPU runs it natively (``torch.cuda.is_bf16_supported`` without emulation).
- CPU: bf16 when the CPU reports AMX tiles or AVX512-BF16 dot products (the flags torch reads
  through cpuinfo). There bf16 matmuls run at 2x (AVX512-BF16) to 10x (AMX) the fp32 rate; without
  them bf16 is converted in software and slower than fp32.
- anything else (MPS, a CPU without those units): fp32.

fp32 stays one flag away (``--precision fp32``, ``--dtype fp32``, the nodes' dtype widget).
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

logger = logging.getLogger(__name__)


# (units, the torch.cpu function that reports them from the CPU's own feature flags), best first
CPU_BF16_PROBES = (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"))


def cpu_bf16_units() -> Optional[str]:
    """The bf16 matrix units this CPU reports through torch: "AMX", "AVX512-BF16", or None."""
    for name, probe in CPU_BF16_PROBES:
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return name
        except RuntimeError:  # a torch build without cpuinfo: no claim, so no bf16
            return None
    return None


def cuda_bf16_native(device: torch.device) -> bool:
    """Whether this CUDA device runs bf16 natively (compute capability 8.0 or newer)."""
    if not torch.cuda.is_available():
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index) >= (8, 0)


def fast_bf16_reason(device: torch.device) -> Optional[str]:
    """Why bf16 is fast on ``device`` (for the log line), or None where it is not."""
    device = torch.device(device)
    if device.type == "cuda":
        return "this GPU runs bf16 natively" if cuda_bf16_native(device) else None
    if device.type == "cpu":
        units = cpu_bf16_units()
        return f"this CPU has bf16 units ({units})" if units else None
    return None


def auto_choice(device: torch.device, what: str = "dtype") -> tuple[torch.dtype, str]:
    """What ``auto`` picks on ``device`` (bf16 or fp32), and the one line that says so, why, and how
    to override it. ``what`` names the setting in that line ("dtype", "--precision")."""
    device = torch.device(device)
    reason = fast_bf16_reason(device)
    if reason:
        return torch.bfloat16, f"{what} auto -> bf16 on {device.type} ({reason}); pass {what} fp32 for full precision"
    return torch.float32, f"{what} auto -> fp32 on {device.type} (no bf16 matrix units reported)"


def auto_dtype(device: torch.device, what: str = "dtype", log: bool = True) -> torch.dtype:
    """``auto_choice``'s dtype, its line logged unless ``log`` is False."""
    dtype, note = auto_choice(device, what)
    if log:
        logger.info("%s", note)
    return dtype

"""Reconstruction quality of a tokenizer on any clips: PSNR over the real frames.

``phenaki eval --tokenizer-only --data FOLDER`` runs :func:`folder_reconstruction` on a video
folder, so a tokenizer trained on your own clips is measured on them (held-out clips if you keep
some apart), not on Shapes World.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional

import torch

logger = logging.getLogger(__name__)


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error on [0, 1] pixels (capped at 100 dB for a perfect match)."""
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def psnr(video: torch.Tensor, recon: torch.Tensor, frame_mask: Optional[torch.Tensor] = None) -> float:
    """PSNR in dB of ``recon`` against ``video`` (both (b, c, f, h, w) in [0, 1], clamped), over
    the frames where ``frame_mask`` (b, f) is True (all frames when it is None)."""
    error = (recon.float().clamp(0, 1) - video.float().clamp(0, 1)).pow(2)  # b c f h w
    if frame_mask is None:
        mse = error.mean().item()
    else:
        weights = frame_mask.to(error.device, torch.float32)[:, None, :, None, None].expand_as(error)
        mse = (error * weights).sum().item() / max(weights.sum().item(), 1.0)
    return psnr_from_mse(mse)


@torch.no_grad()
def folder_reconstruction(tokenizer: Any, dataset: Any, *, batch_size: int = 8, device: str | torch.device = "cpu",
                          worst: int = 5) -> dict[str, Any]:
    """Encode and decode every clip of ``dataset`` (items with ``video`` (c, f, h, w) in [0, 1],
    optional ``frame_mask`` and ``path``) with ``tokenizer`` (a CViViT); returns a JSON-able report:
    the PSNR over all real frames, the spread of the per-clip PSNR, and the ``worst`` clips."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    was_training = tokenizer.training
    tokenizer.eval()
    per_clip: list[tuple[float, str]] = []
    total_error, total_weight = 0.0, 0.0
    try:
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
            video = torch.stack([item["video"] for item in items]).to(device)            # b c f h w
            f = video.shape[2]
            mask = torch.stack([item.get("frame_mask", torch.ones(f, dtype=torch.bool)) for item in items])
            recon = tokenizer.decode_from_ids(tokenizer.encode_to_ids(video)).float().cpu()
            video = video.cpu()
            for i, item in enumerate(items):
                per_clip.append((psnr(video[i:i + 1], recon[i:i + 1], mask[i:i + 1]), str(item.get("path", start + i))))
            error = (recon.clamp(0, 1) - video.clamp(0, 1)).pow(2).mean(dim=(1, 3, 4))  # b f
            total_error += (error * mask).sum().item()
            total_weight += mask.sum().item() * 1.0
    finally:
        tokenizer.train(was_training)
    if not per_clip:
        raise ValueError("the dataset is empty; nothing to measure")
    scores = sorted(s for s, _ in per_clip)
    mse = total_error / max(total_weight, 1.0)
    return {
        "clips": len(per_clip),
        "real_frames": int(total_weight),
        "psnr_db": round(psnr_from_mse(mse), 3),
        "psnr_db_per_clip": {"min": round(scores[0], 3), "median": round(scores[len(scores) // 2], 3),
                             "max": round(scores[-1], 3)},
        "worst": [{"path": path, "psnr_db": round(score, 3)} for score, path in sorted(per_clip)[:worst]],
    }

"""Test helpers: tiny models and inputs built from private RNGs, so tests never disturb each other."""

from __future__ import annotations

import torch

from phenaki_core import Phenaki, TextCondition, preset


def build_tiny(seed: int = 0, **changes) -> Phenaki:
    """A tiny Phenaki with deterministic, slightly perturbed weights (so no parameter is a constant)."""
    config = preset("tiny")
    if changes:
        config = config.replace(**changes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Phenaki(config)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.05 * torch.randn_like(param))
    return model.eval()


def random_text(batch: int, length: int = 5, dim: int = 24, seed: int = 0, pad_last: int = 0) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    embeds = torch.randn(batch, length, dim, generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    if pad_last:
        mask[-1, -pad_last:] = False
        embeds[-1, -pad_last:] = 0
    return TextCondition(embeds, mask)


def random_video(batch: int, frames: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=g)


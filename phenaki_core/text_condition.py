"""Encoded prompts, as the model takes them: per-token embeddings and a padding mask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .errors import InputError


@dataclass
class TextCondition:
    """Encoded prompts: per-token embeddings and a padding mask (True = real token)."""

    embeds: torch.Tensor  # b l d
    mask: torch.Tensor  # b l bool

    def __post_init__(self) -> None:
        if self.embeds.ndim != 3 or self.mask.shape != self.embeds.shape[:2]:
            raise InputError(f"text embeds must be (batch, len, dim) with a (batch, len) mask; got "
                             f"{tuple(self.embeds.shape)} and {tuple(self.mask.shape)}")

    @property
    def batch(self) -> int:
        return self.embeds.shape[0]

    def to(self, device: torch.device | str, dtype: Optional[torch.dtype] = None) -> "TextCondition":
        return TextCondition(self.embeds.to(device=device, dtype=dtype or self.embeds.dtype),
                             self.mask.to(device))

    def repeat(self, times: int) -> "TextCondition":
        return TextCondition(self.embeds.repeat_interleave(times, 0), self.mask.repeat_interleave(times, 0))

    def dropped(self) -> "TextCondition":
        """The same rows with every text token masked: the unconditional branch of CFG."""
        return TextCondition(self.embeds, torch.zeros_like(self.mask))

    def pad_to(self, length: int) -> "TextCondition":
        """Right-pad to ``length`` text tokens (padding is masked out)."""
        extra = length - self.embeds.shape[1]
        if extra <= 0:
            return self
        return TextCondition(F.pad(self.embeds, (0, 0, 0, extra)), F.pad(self.mask, (0, extra), value=False))

    @staticmethod
    def from_rows(rows: Sequence[torch.Tensor]) -> "TextCondition":
        """Unpadded per-prompt embeddings [(n_i, d)] -> one batch, right-padded to the longest (at
        least one token; padding is masked out)."""
        length = max(1, max(r.shape[0] for r in rows))
        embeds = torch.stack([F.pad(r, (0, 0, 0, length - r.shape[0])) for r in rows])
        mask = torch.stack([torch.arange(length, device=r.device) < r.shape[0] for r in rows])
        return TextCondition(embeds, mask)

    @staticmethod
    def cat(conditions: list["TextCondition"]) -> "TextCondition":
        """Stack rows of several conditions, padding them to a common length."""
        length = max(c.embeds.shape[1] for c in conditions)
        padded = [c.pad_to(length) for c in conditions]
        return TextCondition(torch.cat([c.embeds for c in padded]), torch.cat([c.mask for c in padded]))

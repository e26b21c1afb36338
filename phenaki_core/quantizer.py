"""Lookup-free quantization (LFQ, Yu et al. 2023, "Language Model Beats Diffusion").

Each token's latent is projected to ``bits = log2(codebook_size)`` channels and quantized to
the sign of each channel; the id is the binary number those signs spell (bit 0 is the most
significant). There is no codebook to collapse; an entropy term keeps codes in use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # ... d, straight-through
    ids: torch.Tensor  # ... long
    commit_loss: torch.Tensor  # scalar
    entropy_loss: torch.Tensor  # scalar


class LFQ(nn.Module):
    def __init__(self, dim: int, codebook_size: int, entropy_temperature: float = 0.01,
                 entropy_sample_tokens: int = 4096):
        super().__init__()
        self.bits = int(math.log2(codebook_size))
        self.codebook_size = codebook_size
        self.entropy_temperature = entropy_temperature
        self.entropy_sample_tokens = entropy_sample_tokens
        self.project_in = nn.Linear(dim, self.bits)
        self.project_out = nn.Linear(self.bits, dim)

    def _bit_values(self, device: torch.device) -> torch.Tensor:
        """Bit weights, most significant first: id = sum(bit_k * 2**(bits-1-k))."""
        return 2 ** torch.arange(self.bits - 1, -1, -1, device=device)

    def codes_from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) -> codes (..., bits) in {-1, +1}."""
        bits = (ids.unsqueeze(-1) // self._bit_values(ids.device)) % 2
        return bits.float() * 2 - 1

    def ids_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return ((codes > 0).long() * self._bit_values(codes.device)).sum(-1)

    def encode_ids(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., dim) -> ids (...)."""
        return self.ids_from_codes(self.project_in(z))

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) -> latent (..., dim) for the decoder."""
        return self.project_out(self.codes_from_ids(ids).to(self.project_out.weight.dtype))

    def forward(self, z: torch.Tensor, mask: Optional[torch.Tensor] = None) -> QuantizerOutput:
        """z (..., dim); ``mask`` (...) bool marks the tokens the losses count (None: all)."""
        h = self.project_in(z)  # ... bits
        codes = torch.where(h > 0, 1.0, -1.0).to(h.dtype)
        quantized = h + (codes - h).detach()  # straight-through estimator
        if mask is not None:
            mask = mask.expand(h.shape[:-1])
        counted = h if mask is None else h[mask]  # n bits
        commit = F.mse_loss(counted, (codes if mask is None else codes[mask]).detach())
        entropy = self._entropy_loss(counted) if self.training else h.new_zeros(())
        return QuantizerOutput(self.project_out(quantized), self.ids_from_codes(codes), commit, entropy)

    def _entropy_loss(self, h: torch.Tensor) -> torch.Tensor:
        """Per-token entropy (want low) minus codebook-usage entropy (want high), in float32 even
        under autocast: the logits are h.c scaled by 2 / entropy_temperature (200x), hundreds in
        size, where bf16 keeps only steps of 1 or more: the softmax over the codes would be noise."""
        with torch.autocast(h.device.type, enabled=False):
            return self._entropy_loss_fp32(h.float())

    def _entropy_loss_fp32(self, h: torch.Tensor) -> torch.Tensor:
        flat = h.reshape(-1, self.bits)
        if flat.shape[0] > self.entropy_sample_tokens:
            step = flat.shape[0] // self.entropy_sample_tokens
            flat = flat[::step][: self.entropy_sample_tokens]
        all_codes = self.codes_from_ids(torch.arange(self.codebook_size, device=h.device))  # K bits
        # distance to every code is |h|^2 + bits - 2 h.c, so the softmax only needs h.c
        logits = 2 * flat @ all_codes.t() / self.entropy_temperature  # N K
        probs = logits.softmax(-1)
        per_token = -(probs * logits.log_softmax(-1)).sum(-1).mean()
        mean_probs = probs.mean(0)
        usage = -(mean_probs * torch.log(mean_probs.clamp_min(1e-9))).sum()
        return per_token - usage

"""The objects that travel between Phenaki nodes (ComfyUI socket types are plain strings).

    PHENAKI_MODEL   PhenakiModel   a loaded checkpoint + its text encoder, under ComfyUI's model management
    PHENAKI_COND    PhenakiCond    an encoded prompt (and optional negative prompt)
    PHENAKI_TOKENS  PhenakiTokens  token ids of one clip, with the model that can decode or continue it
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..phenaki_core import PhenakiConfig, PhenakiPipeline, TextCondition, TextEncoderSpec

MODEL = "PHENAKI_MODEL"
COND = "PHENAKI_COND"
TOKENS = "PHENAKI_TOKENS"


class ManagedModules(torch.nn.Module):
    """What ComfyUI's model management moves between devices: the bundle and its text encoder."""

    def __init__(self, pipeline: PhenakiPipeline):
        super().__init__()
        self.phenaki = pipeline.model
        self.text_encoder = pipeline.text_encoder.model if pipeline.text_encoder is not None else None


@dataclass(eq=False)
class PhenakiModel:
    """A loaded checkpoint. ``patcher`` is ComfyUI's ModelPatcher (None outside ComfyUI)."""

    pipeline: PhenakiPipeline
    name: str  # as chosen in the loader
    path: Path
    load_device: torch.device
    dtype: torch.dtype
    patcher: Any = None

    @property
    def config(self) -> PhenakiConfig:
        return self.pipeline.model.config

    @property
    def text_spec(self) -> Optional[TextEncoderSpec]:
        """The text encoder this model was trained with; None for an unconditional model."""
        encoder = self.pipeline.text_encoder
        return None if encoder is None else encoder.spec

    def __repr__(self) -> str:
        return f"PhenakiModel({self.name!r}, {self.load_device}, {self.dtype})"


@dataclass(eq=False)
class PhenakiCond:
    """An encoded prompt, kept on the CPU. ``text`` is None when the model is unconditional."""

    prompt: str
    negative_prompt: str
    text: Optional[TextCondition]
    negative: Optional[TextCondition]
    encoder: Optional[TextEncoderSpec]  # the encoder that made ``text``


@dataclass(eq=False)
class PhenakiTokens:
    """Token ids of one clip (prime included), and what later nodes need to decode or continue it.

    ``prime_frames`` leading frames were given (a prime) rather than generated. ``source`` holds
    the pixels the ids were encoded from (Encode Video), so that priming uses the real frames
    instead of a decoded reconstruction.
    """

    ids: torch.Tensor  # (b, t, y, x) int64, on the CPU
    model: PhenakiModel  # whose tokenizer made the ids
    prime_frames: int = 0
    source: Optional[torch.Tensor] = None  # (b, c, f, H, W) in [0, 1], on the CPU

    @property
    def num_frames(self) -> int:
        return self.model.config.cvivit.frames_for_token_frames(self.ids.shape[1])

    @property
    def fps(self) -> float:
        return float(self.model.config.fps)

    def __repr__(self) -> str:
        return (f"PhenakiTokens({self.num_frames} frames, prime {self.prime_frames}, ids {tuple(self.ids.shape)}, "
                f"{self.model.name!r})")

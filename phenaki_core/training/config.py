"""Training settings (one frozen dataclass shared by both stages)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..config import _non_negative_float, _positive_int
from ..errors import ConfigError

STAGES = ("tokenizer", "transformer")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    stage: str = "tokenizer"
    steps: int = 2000  # total optimizer steps of this run (a resumed run continues to this number)
    batch_size: int = 16  # the global batch of one optimizer step (all processes, all micro-batches)
    grad_accum: int = 1  # micro-batches accumulated per step in each process
    lr: float = 3e-4
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    seed: int = 0
    precision: str = "auto"  # bf16 autocast on CUDA when auto
    checkpoint_every: int = 200
    preview_every: int = 500
    log_every: int = 20
    num_workers: int = 0
    # stage 1 loss weights
    commit_weight: float = 0.25
    entropy_weight: float = 0.05
    foreground_weight: float = 0.0  # extra weight of foreground pixels in the reconstruction loss
    halo_weight: float = 0.0  # extra weight of background pixels the reconstruction draws as foreground
    decoder_only: bool = False  # stage 1: train only the decoder; token ids (and a transformer on them) stay valid
    # stage 2: hide each caption token but the first from the model with this probability, so it
    # cannot lean on one word (the first token, [CLS] for BERT-style encoders, always stays)
    text_token_drop: float = 0.0
    # stage 2: start each caption's condition with its mean-pooled sentence embedding (the model's
    # TextEncoderSpec records it; warm starts from such a model keep it), and with this probability
    # hide every other token of a caption, so the model learns to read the sentence embedding alone
    pooled_text_token: bool = False
    text_pooled_only: float = 0.0
    # stage 2: add Gaussian noise of this size (relative to each token's RMS) to the caption
    # embeddings, so the model's reading of them is smooth around the training wording
    text_noise: float = 0.0
    # data order (datasets other than the procedural Shapes World are shuffled per epoch)
    data_seed: int = 0
    # Shapes World data
    continuation_prob: float = 0.3
    paraphrase_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "preview_every", "log_every"):
            _positive_int(name, getattr(self, name))
        for name in ("warmup_steps", "num_workers", "seed", "data_seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("lr", "weight_decay", "grad_clip", "commit_weight", "entropy_weight", "foreground_weight",
                     "halo_weight", "text_noise"):
            _non_negative_float(name, getattr(self, name))
        for name in ("ema_decay", "beta1", "beta2", "min_lr_ratio", "continuation_prob", "paraphrase_prob",
                     "text_token_drop", "text_pooled_only"):
            _non_negative_float(name, getattr(self, name), upper=1.0)
        if self.lr <= 0:
            raise ConfigError("lr must be > 0")
        if not isinstance(self.decoder_only, bool):
            raise ConfigError(f"decoder_only must be True or False, got {self.decoder_only!r}")
        if self.text_token_drop >= 1.0:
            raise ConfigError(f"text_token_drop must be below 1, got {self.text_token_drop!r}")
        if self.text_token_drop and self.stage != "transformer":
            raise ConfigError("text_token_drop hides caption tokens from the transformer; it applies to stage 2 only")
        if self.text_noise and self.stage != "transformer":
            raise ConfigError("text_noise perturbs the caption embeddings; it applies to stage 2 only")
        if not isinstance(self.pooled_text_token, bool):
            raise ConfigError(f"pooled_text_token must be True or False, got {self.pooled_text_token!r}")
        if self.pooled_text_token and self.stage != "transformer":
            raise ConfigError("pooled_text_token changes the transformer's text condition; it applies to stage 2 only")
        if self.text_pooled_only and not self.pooled_text_token:
            raise ConfigError("text_pooled_only hides all but the pooled sentence token; turn on pooled_text_token "
                              "(--pooled-text-token) too")
        if self.text_pooled_only >= 1.0:
            raise ConfigError(f"text_pooled_only must be below 1, got {self.text_pooled_only!r}")
        if self.decoder_only and self.stage != "tokenizer":
            raise ConfigError("decoder_only fine-tunes the tokenizer's decoder; it applies to the tokenizer stage only")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown training settings {sorted(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warmup to 1, then cosine decay to ``min_lr_ratio`` at ``config.steps``."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

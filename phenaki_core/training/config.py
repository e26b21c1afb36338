"""Training settings: one frozen dataclass shared by both stages.

Each field carries its own help text and bounds in its metadata. ``TrainConfig`` validates
itself from them, and ``phenaki train`` builds one command-line option per field from them
(``--warmup-steps`` for ``warmup_steps``, with the default in ``--help``), so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import ConfigError
from ..validation import is_int, is_number

STAGES = ("tokenizer", "transformer")
PRECISIONS = ("auto", "fp32", "bf16")


def _setting(default: Any, help: str, *, low: Optional[float] = None, high: Optional[float] = None,
             above: Optional[float] = None, choices: Optional[tuple[str, ...]] = None,
             stage: Optional[str] = None, metavar: Optional[str] = None) -> Any:
    """A field with its help text and bounds: ``low <= value <= high``, ``value > above``, one of
    ``choices``; ``stage``: the only stage in which a non-default value means anything."""
    return field(default=default, metadata={"help": help, "low": low, "high": high, "above": above,
                                            "choices": choices, "stage": stage, "metavar": metavar})


@dataclass(frozen=True)
class TrainConfig:
    stage: str = _setting("tokenizer", "which stage to train", choices=STAGES)
    steps: int = _setting(2000, "optimizer steps of the whole run (a resumed run continues to this number)", low=1)
    batch_size: int = _setting(16, "global batch of one optimizer step (all processes and micro-batches)", low=1)
    grad_accum: int = _setting(1, "micro-batches accumulated per step, in each process", low=1)
    lr: float = _setting(3e-4, "peak learning rate (AdamW)", above=0)
    warmup_steps: int = _setting(200, "steps of linear learning-rate warm-up, before the cosine decay", low=0)
    min_lr_ratio: float = _setting(0.1, "the cosine decay ends at lr times this", low=0, high=1)
    weight_decay: float = _setting(0.01, "AdamW weight decay (on weight matrices only)", low=0)
    beta1: float = _setting(0.9, "AdamW beta1", low=0, high=1)
    beta2: float = _setting(0.99, "AdamW beta2", low=0, high=1)
    grad_clip: float = _setting(1.0, "clip the gradient norm to this", low=0)
    ema_decay: float = _setting(0.995, "decay of the EMA weights the bundle holds; early on it ramps up as "
                                       "(1 + n) / (10 + n) after n updates, so short runs ship trained weights",
                                low=0, high=1)
    seed: int = _setting(0, "initial weights and every step's random draws", low=0)
    precision: str = _setting("auto", "auto (bf16 autocast where the device has bf16 matrix units: an "
                                      "Ampere or newer GPU, a CPU with AMX or AVX512-BF16; fp32 elsewhere), "
                                      "fp32 or bf16",
                              choices=PRECISIONS)
    checkpoint_every: int = _setting(200, "steps between checkpoints (one is also written at the end, at "
                                          "--stop-at, --max-minutes, Ctrl-C and SIGTERM)", low=1)
    preview_every: int = _setting(500, "steps between preview GIFs in RUN_DIR/previews (one is also made at "
                                       "the end)", low=1)
    log_every: int = _setting(20, "steps between log lines and metrics.jsonl records", low=1)
    num_workers: int = _setting(0, "data-loading worker processes", low=0)
    commit_weight: float = _setting(0.25, "stage 1: LFQ commitment loss weight", low=0)
    entropy_weight: float = _setting(0.05, "stage 1: LFQ entropy loss weight", low=0)
    foreground_weight: float = _setting(0.0, "stage 1: extra weight of foreground pixels (sparse content on a "
                                             "flat background)", low=0)
    halo_weight: float = _setting(0.0, "stage 1: extra weight of background pixels the reconstruction draws as "
                                       "foreground (set it to --foreground-weight to keep objects from bloating)",
                                  low=0)
    decoder_only: bool = _setting(False, "stage 1: fine-tune only the decoder of the --init-from model; its token "
                                         "ids stay the same, so the transformer it carries keeps working",
                                  stage="tokenizer")
    data_seed: int = _setting(0, "data order and clip offsets (a video folder is shuffled per epoch)", low=0)
    continuation_prob: float = _setting(0.3, "Shapes World: share of clips that continue an earlier clip",
                                        low=0, high=1)
    paraphrase_prob: float = _setting(0.5, "Shapes World: share of captions reworded", low=0, high=1)
    typed_share: float = _setting(0.5, "Shapes World: share of the reworded captions written the way people type "
                                       "prompts (tag lists, commands, tenses, casing, typos); the rest are paraphrases",
                                  low=0, high=1)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name), self.stage)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        # a training state may list these settings at the value that made them do nothing: it
        # resumes as if they were absent
        data = {k: v for k, v in data.items() if not (k in _GONE and v == _GONE[k])}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown training settings {sorted(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


_GONE = {"text_token_drop": 0.0, "pooled_text_token": False, "text_pooled_only": 0.0, "text_noise": 0.0}


def _check(f: dataclasses.Field, value: Any, stage: str) -> None:
    """Validate one field against its metadata (the type comes from its default)."""
    meta, name = f.metadata, f.name
    if isinstance(f.default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
    elif isinstance(f.default, int):
        if not is_int(value, meta["low"]):
            raise ConfigError(f"{name} must be an integer >= {meta['low']}, got {value!r}")
    elif isinstance(f.default, float):
        if not is_number(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        for bound, ok, words in (("low", lambda b: value >= b, ">="), ("high", lambda b: value <= b, "<="),
                                 ("above", lambda b: value > b, ">")):
            if meta[bound] is not None and not ok(meta[bound]):
                raise ConfigError(f"{name} must be {words} {meta[bound]}, got {value!r}")
    elif meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"{name} must be one of {meta['choices']}, got {value!r}")
    if meta["stage"] is not None and value != f.default and stage != meta["stage"]:
        raise ConfigError(f"{name} applies to the {meta['stage']} stage only")


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warmup to 1, then cosine decay to ``min_lr_ratio`` at ``config.steps``."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

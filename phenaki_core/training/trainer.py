"""The two-stage training loop (Shapes World by default, or any dataset of clips or tokens).

    stage 1 (tokenizer):   C-ViViT reconstruction + LFQ commitment/entropy losses
    stage 2 (transformer): MaskGit + critic on the frozen tokenizer, frozen text encoder

Both stages share one loop: AdamW with warmup and cosine decay, gradient clipping, gradient
accumulation, EMA weights, bf16 autocast where the hardware has bf16 units (``precision.py``), a
progress bar with loss and throughput, periodic animated previews, and atomic checkpoints that
resume exactly. Under torchrun the trained module runs in DistributedDataParallel and rank 0
alone logs and writes. Which items a step reads, and its random draws, are pure functions of
(seed, step, slot) (see distributed.py), so a resumed run, on any number of processes, sees
exactly the batches of an uninterrupted one.

Dataset items are dicts with either
    video (c, f, H, W) in [0, 1], caption (stage 2), optional frame_mask (f,) bool, or
    ids (t, y, x), text_embeds (n, d) + text_mask (n,) (precomputed shards, stage 2 only).

Run directory:
    train_state.safetensors   everything needed to resume
    bundle.safetensors        the EMA weights as a loadable model bundle
    previews/step_XXXXXXX.gif reconstructions (stage 1) or samples (stage 2)
    metrics.jsonl             one JSON line per log interval
    train.lock                held by the live run (see RunLock)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset

from ..checkpoint import atomic_write, load_bundle, read_metadata, save_bundle
from ..config import PRESETS, PhenakiConfig
from ..data import ShapesWorldConfig, ShapesWorldDataset, evaluation_prompts
from ..data.shapes_world import MIN_IMAGE_SIZE
from ..errors import CheckpointError, ConfigError, InputError
from ..evaluation.reconstruction import psnr
from ..guided import sample_ids
from ..phenaki import Phenaki, TextCondition
from ..precision import auto_dtype
from ..sampling import SamplerConfig
from ..text import MINILM_SPEC, CaptionEncoder, TextEncoderSpec
from ..validation import is_int
from ..video_io import grid, save_video
from .config import TrainConfig, lr_factor
from .distributed import (DistContext, EpochOrder, StepSampler, barrier, current_context, mean_across,
                          micro_batch_size, slot_generator)
from .state import TrainState, load_train_state, read_state_header, save_train_state

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.safetensors"
BUNDLE_FILE = "bundle.safetensors"
LOCK_FILE = "train.lock"
PREVIEW_CLIPS = 4
# Caption embeddings kept between steps. Shapes World's paraphrases make most captions new, so an
# unbounded cache would grow by every clip of a long run; the canonical captions, which recur, stay.
CAPTION_CACHE = 20_000
RESUME_MAY_CHANGE = ("steps", "grad_accum", "num_workers", "checkpoint_every", "preview_every", "log_every")


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    bundle: Path
    last_loss: float
    stopped: Optional[str] = None  # before the end: "signal", "time" or "stop_at"
    finished_before: bool = False  # the run was already at its end; nothing was trained


def _adds_pixel_refiner(old, new) -> bool:
    """True when ``new`` is ``old`` with a pixel refiner added to a decoder that had none."""
    return (old.cvivit.pixel_refiner == 0 < new.cvivit.pixel_refiner and old.cvivit.differs_only_in_refiner(new.cvivit)
            and old.replace(cvivit=new.cvivit) == new)


def _load_growing(model: torch.nn.Module, state: dict, grows: bool) -> None:
    """Load ``state`` strictly; when ``grows``, the new pixel refiner's weights may be absent
    (they keep their identity initialisation) and nothing else may be."""
    if not grows:
        model.load_state_dict(state, strict=True)
        return
    missing, unexpected = model.load_state_dict(state, strict=False)
    stray = [k for k in missing if not k.startswith("cvivit.pixel_refiner.")] + list(unexpected)
    if stray:
        raise CheckpointError(f"the bundle does not fit this model: {stray[:5]}")


def _decay_groups(params: list[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only; none on norms, biases, embeddings, scales and null k/v."""
    decay, no_decay = [], []
    for name, param in params:
        is_matrix = param.ndim >= 2 and not any(s in name for s in ("emb", "null_kv"))
        (decay if is_matrix else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _ema_update(decay: float):
    """EMA with a warm-up: after ``n`` updates the decay is ``min(decay, (1 + n) / (10 + n))``, so
    the average of a short run follows its training instead of staying at its first weights."""

    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = int(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        if torch.is_floating_point(ema_params[0]) or torch.is_complex(ema_params[0]):
            torch._foreach_lerp_(ema_params, params, 1 - d)
        else:
            for ema, param in zip(ema_params, params):
                ema.copy_(ema * d + param * (1 - d))
    return update


def config_difference(theirs: Any, ours: Any, limit: int = 4) -> str:
    """The fields in which two config dataclasses differ: ``"image_size 16 there, 64 here, ..."``."""
    diffs: list[str] = []

    def walk(a: dict, b: dict, prefix: str) -> None:
        for key in [*a, *(k for k in b if k not in a)]:  # declaration order: sizes first
            x, y = a.get(key), b.get(key)
            if isinstance(x, dict) and isinstance(y, dict):
                walk(x, y, f"{prefix}{key}.")
            elif x != y:
                diffs.append(f"{prefix}{key} {x!r} there, {y!r} here")

    walk(dataclasses.asdict(theirs), dataclasses.asdict(ours), "")
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return ", ".join(diffs[:limit]) + more


@contextlib.contextmanager
def _logs_above(bar):
    """Log lines printed above the progress bar, not into it."""
    if bar is None:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm
    with logging_redirect_tqdm():
        yield


class RunLock:
    """An exclusive lock on a run directory, held by the live run (``flock`` on ``train.lock``).

    The operating system drops the lock when its process dies, so a lock that a killed run left
    behind is free and is taken over. Where ``fcntl`` is missing (Windows) nothing is locked."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.handle = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise InputError(f"{self.path.parent} is in use by a live run ({owner}); wait for it to end, stop it, "
                             f"or choose another run directory") from None
        handle.seek(0)
        left = handle.read().strip()
        if left:  # a run ends by emptying the file: this one was killed
            logger.info("taking over %s, left by a run that was stopped (%s)", self.path, left)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is None:
            return
        import fcntl
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.flush()
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        self.handle = None


class Trainer:
    """One training run in ``run_dir``: builds (or resumes) the model, optimizer, EMA and data;
    :meth:`run` trains. Construction reads the run directory; :meth:`run` holds its lock."""

    def __init__(self, run_dir: str | os.PathLike, model_config: PhenakiConfig, train_config: TrainConfig, *,
                 device: str | torch.device = "cpu", init_from: Optional[str | os.PathLike] = None,
                 tokenizer_from: Optional[str | os.PathLike] = None, text_encoder=None,
                 text_spec: Optional[TextEncoderSpec] = None, resume: bool = True, progress: bool = True,
                 dataset: Optional[Dataset] = None, collate_fn: Optional[Callable] = None,
                 preview_prompts: Optional[list[str]] = None, dist: Optional[DistContext] = None):
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.dist = dist or current_context()
        self.progress = progress and self.dist.is_main
        self.history: list[dict[str, Any]] = []
        state_path = self.run_dir / STATE_FILE
        state = load_train_state(state_path) if resume and state_path.is_file() else None
        self._resume, self._read_step = resume, state.step if state is not None else None
        self.config, self.train_config = self._restore_configs(state, model_config, train_config)
        self.autocast_dtype = self._autocast_dtype()
        self.text_spec = self._text_spec(state, init_from, text_spec or getattr(text_encoder, "spec", None))
        self._check_text_encoder(text_encoder)
        self.micro_batch = micro_batch_size(self.train_config.batch_size, self.train_config.grad_accum, self.dist)
        self._build_model(state, init_from, tokenizer_from)
        self._build_optimizer()
        self.step = 0
        if state is not None:
            self._load_state(state)
        self.start_step = self.step
        self.trained = self._trained_module()
        self._build_data(dataset, collate_fn)
        self.preview_prompts = preview_prompts
        self.captions = CaptionEncoder(text_encoder, CAPTION_CACHE) if text_encoder is not None else None

    # --- setup ------------------------------------------------------------------------------------
    def _restore_configs(self, state: Optional[TrainState], model_config: PhenakiConfig,
                         train_config: TrainConfig) -> tuple[PhenakiConfig, TrainConfig]:
        """A resumed run keeps its model and recipe; its length, process layout and bookkeeping may change."""
        if state is None:
            return model_config, train_config
        saved = TrainConfig.from_dict(state.info["train_config"])
        free = {name: getattr(train_config, name) for name in RESUME_MAY_CHANGE}
        if saved.replace(**free) != train_config:
            logger.warning("resuming %s with the settings it was started with (only %s may change)",
                           self.run_dir, ", ".join(RESUME_MAY_CHANGE))
        self.history = state.info.get("history", [])
        return PhenakiConfig.from_dict(state.info["model_config"]), saved.replace(**free)

    @staticmethod
    def _text_spec(state: Optional[TrainState], init_from, given: Optional[TextEncoderSpec]) -> TextEncoderSpec:
        """The text encoder this run trains for: the resumed run's, else the warm start's, else the
        encoder given (MiniLM when none is)."""
        if state is not None and "text_encoder" in state.info:
            return TextEncoderSpec.from_dict(state.info["text_encoder"])
        if init_from is not None:
            return read_metadata(init_from)[1]
        return given or MINILM_SPEC

    def _check_text_encoder(self, text_encoder) -> None:
        if (self.train_config.stage == "transformer" and self.config.maskgit.unconditional is False
                and text_encoder is None):
            raise ConfigError("stage 2 needs the text encoder (pass text_encoder=load_minilm())")
        encoder_spec = getattr(text_encoder, "spec", None)
        if encoder_spec is not None and not encoder_spec.matches(self.text_spec):
            raise CheckpointError(f"this run's model reads text from {self.text_spec.describe()}, but the text "
                                  f"encoder given is {encoder_spec.describe()}; pass the matching encoder")
        if (self.train_config.stage == "transformer" and not self.config.maskgit.unconditional
                and self.config.maskgit.text_dim != self.text_spec.dim):
            fitting = [name for name, size in PRESETS.items() if size().maskgit.text_dim == self.text_spec.dim]
            raise ConfigError(f"this model reads {self.config.maskgit.text_dim}-d text, but stage 2 trains with "
                              f"{self.text_spec.describe()}; presets made for it: {', '.join(fitting)}")

    def _build_model(self, state: Optional[TrainState], init_from, tokenizer_from) -> None:
        cfg = self.train_config
        with torch.random.fork_rng(devices=[]):  # deterministic init without touching the caller's RNG
            torch.manual_seed(cfg.seed)
            self.model = Phenaki(self.config)
        if state is None:
            if cfg.decoder_only and init_from is None:
                raise ConfigError("decoder_only fine-tunes the decoder of a trained tokenizer; name that model "
                                  "with init_from (--init-from)")
            self._warm_start(init_from, tokenizer_from)
        self.model.to(self.device)
        self.model.cvivit.requires_grad_(cfg.stage == "tokenizer" and not cfg.decoder_only)
        if cfg.decoder_only:
            for module in self.model.cvivit.decoder_modules():
                module.requires_grad_(True)

    def _build_optimizer(self) -> None:
        cfg = self.train_config
        self.params = self._stage_parameters()
        names = {id(p): n for n, p in self.model.named_parameters()}
        self.optimizer = torch.optim.AdamW(_decay_groups([(names[id(p)], p) for p in self.params], cfg.weight_decay),
                                           lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.ema = AveragedModel(self.model, multi_avg_fn=_ema_update(cfg.ema_decay), use_buffers=True)

    def _load_state(self, state: TrainState) -> None:
        self.model.load_state_dict(state.model, strict=True)
        self.ema.load_state_dict(state.ema, strict=True)
        self.optimizer.load_state_dict(state.optimizer)
        self.step = state.step
        logger.info("resumed %s at step %d", self.run_dir, self.step)

    def _build_data(self, dataset: Optional[Dataset], collate_fn: Optional[Callable]) -> None:
        """The given dataset, or Shapes World at the model's geometry."""
        cfg, config = self.train_config, self.config
        self.custom_data = dataset is not None
        self.data_config = None
        if dataset is None:
            frames = min(17, config.max_frames)
            if config.cvivit.image_size < MIN_IMAGE_SIZE:
                fitting = [n for n, size in PRESETS.items() if size().cvivit.image_size >= MIN_IMAGE_SIZE]
                raise ConfigError(f"Shapes World (the data when no dataset is given, --data) draws frames of at "
                                  f"least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}, and this model makes "
                                  f"{config.cvivit.image_size}x{config.cvivit.image_size}; give your clips (--data "
                                  f"FOLDER) or a larger model: {', '.join(fitting)}")
            self.data_config = ShapesWorldConfig(
                image_size=config.cvivit.image_size, num_frames=frames,
                temporal_patch=config.cvivit.temporal_patch_size, continuation_prob=cfg.continuation_prob,
                prime_frames=min(5, frames - config.cvivit.temporal_patch_size),
                paraphrase_prob=cfg.paraphrase_prob, typed_share=cfg.typed_share, fps=int(config.fps))
            dataset = ShapesWorldDataset(self.data_config, seed=cfg.data_seed)
        self.dataset = dataset
        self.positions = EpochOrder(dataset, seed=cfg.data_seed,
                                    shuffle=not getattr(dataset, "is_procedural", False))
        self.collate_fn = collate_fn

    def _warm_start(self, init_from, tokenizer_from) -> None:
        if init_from is not None:
            bundle = load_bundle(init_from)
            grows = _adds_pixel_refiner(bundle.model.config, self.config)
            if bundle.model.config != self.config and not grows:
                raise CheckpointError(f"{init_from} has another architecture than this run's model "
                                      f"({config_difference(bundle.model.config, self.config)}); leave --preset "
                                      f"out to train the bundle's own")
            _load_growing(self.model, bundle.model.state_dict(), grows)
            if grows:
                logger.info("the decoder gains a pixel refiner of width %d; it starts as the identity",
                            self.config.cvivit.pixel_refiner)
            self.history = list(bundle.extra.get("history", []))
            logger.info("warm start from %s", init_from)
        if tokenizer_from is not None:
            bundle = load_bundle(tokenizer_from)
            if bundle.model.config.cvivit != self.config.cvivit:
                raise CheckpointError(f"the tokenizer in {tokenizer_from} has another geometry than this run's "
                                      f"model ({config_difference(bundle.model.config.cvivit, self.config.cvivit)});"
                                      f" leave --preset out to take the model from the tokenizer bundle")
            self.model.cvivit.load_state_dict(bundle.model.cvivit.state_dict(), strict=True)
            # the tokenizer's training comes from its own bundle; a warm-started transformer keeps its own
            tokenizer_history = [h for h in bundle.extra.get("history", []) if h.get("stage") == "tokenizer"]
            self.history = tokenizer_history + [h for h in self.history if h.get("stage") != "tokenizer"]
            logger.info("tokenizer from %s", tokenizer_from)

    def _trained_module(self) -> torch.nn.Module:
        """The module whose forward computes the loss, in DDP when the job has several processes."""
        module = self.model.cvivit if self.train_config.stage == "tokenizer" else self.model
        if not self.dist.enabled:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=False)

    def _stage_parameters(self) -> list[torch.nn.Parameter]:
        if self.train_config.stage == "tokenizer":
            return [p for p in self.model.cvivit.parameters() if p.requires_grad]
        return self.model.transformer_parameters()

    def _autocast_dtype(self) -> Optional[torch.dtype]:
        """bf16 (autocast) or None (fp32): ``auto`` is bf16 where the device has bf16 matrix units."""
        precision = self.train_config.precision
        if precision == "auto":
            dtype = auto_dtype(self.device, "--precision", log=self.dist.is_main)
        else:
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        return None if dtype == torch.float32 else dtype

    def autocast(self):
        """The autocast context a training step runs under (bf16), or a null context (fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _loader(self, total_steps: int) -> DataLoader:
        cfg = self.train_config
        sampler = StepSampler(self.step, total_steps, cfg.batch_size, cfg.grad_accum, self.dist)
        return DataLoader(self.positions, batch_size=self.micro_batch, sampler=sampler, num_workers=cfg.num_workers,
                          collate_fn=self.collate_fn, drop_last=False, persistent_workers=False,
                          pin_memory=self.device.type == "cuda")

    # --- losses -----------------------------------------------------------------------------------
    def _loss(self, batch: dict[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.train_config
        frame_mask = batch.get("frame_mask")
        frame_mask = None if frame_mask is None else frame_mask.to(self.device, non_blocking=True).bool()
        if cfg.stage == "tokenizer":
            if "video" not in batch:
                raise ConfigError("stage 1 trains on videos; this dataset yields precomputed tokens")
            video = batch["video"].to(self.device, non_blocking=True)
            out = self.trained(video, frame_mask=frame_mask, foreground_weight=cfg.foreground_weight,
                               halo_weight=cfg.halo_weight)
            loss = out.recon_loss + cfg.commit_weight * out.commit_loss + cfg.entropy_weight * out.entropy_loss
            return loss, {"recon": out.recon_loss.item(), "entropy": out.entropy_loss.item()}
        if "ids" in batch:  # precomputed shards
            ids = batch["ids"].to(self.device, non_blocking=True)
            text = TextCondition(batch["text_embeds"].to(self.device, non_blocking=True),
                                 batch["text_mask"].to(self.device, non_blocking=True).bool())
        else:
            with torch.no_grad():
                self.model.cvivit.eval()
                ids = self.model.cvivit.encode_to_ids(batch["video"].to(self.device, non_blocking=True))
            text = self.captions(list(batch["caption"]), self.device) if self.captions is not None else None
        out = self.trained(ids, text=text, video_frame_mask=frame_mask, generator=generator)
        metrics = {"token": out.token_loss.item()}  # MaskGit's masked-token cross-entropy
        if out.critic_loss is not None:
            metrics["critic"] = out.critic_loss.item()
        return out.loss, metrics

    # --- checkpoints and previews -----------------------------------------------------------------
    def _history(self, wall: float) -> list[dict[str, Any]]:
        cfg = self.train_config
        record = {"stage": cfg.stage, "steps": self.step, "batch_size": cfg.batch_size, "lr": cfg.lr,
                  "wall_time_s": round(wall, 1), "device": _device_name(self.device),
                  "processes": self.dist.world_size, "grad_accum": cfg.grad_accum}
        if cfg.decoder_only:
            record["decoder_only"] = True
        return self.history + [record]

    def save(self, wall: float) -> None:
        """Rank 0 writes the training state and the EMA bundle (atomically); the others wait."""
        if self.dist.is_main:
            self._save(wall)
        self._resume, self._read_step = True, self.step  # the state on disk is now this trainer's own
        barrier(self.dist)

    def _save(self, wall: float) -> None:
        history = self._history(wall)
        info = {"model_config": self.config.to_dict(), "train_config": self.train_config.to_dict(),
                "text_encoder": self.text_spec.to_dict(), "history": self.history, "wall_time_s": wall}
        save_train_state(self.run_dir / STATE_FILE, TrainState(
            self.step, self.model.state_dict(), self.ema.state_dict(), self.optimizer.state_dict(), None, info))
        save_bundle(self.run_dir / BUNDLE_FILE, self.ema.module, self.text_spec,
                    extra={"history": history, "train_config": self.train_config.to_dict()})

    @torch.no_grad()
    def preview(self) -> Path:
        model = self.ema.module.eval()
        path = self.run_dir / "previews" / f"step_{self.step:07d}.gif"
        if self.train_config.stage == "tokenizer":
            held_out = (self.positions if self.custom_data
                        else ShapesWorldDataset(self.data_config, seed=self.train_config.data_seed + 1_000_003))
            video = torch.stack([held_out[i]["video"] for i in range(PREVIEW_CLIPS)]).to(self.device)
            recon = model.cvivit.decode_from_ids(model.cvivit.encode_to_ids(video))
            logger.info("step %d: preview reconstruction PSNR %.2f dB", self.step, psnr(video, recon))
            clips = [c for pair in zip(video, recon) for c in pair]
            columns = 2
        else:
            prompts = self._preview_prompts()
            if self.captions is None or not prompts:
                return path
            text = self.captions(prompts, self.device)
            frames = min(17, self.config.max_frames)
            ids = sample_ids(model, text, num_frames=frames, sampler=SamplerConfig(steps=12),
                             generator=torch.Generator(device=self.device).manual_seed(0))
            clips = list(model.cvivit.decode_from_ids(ids))
            columns = PREVIEW_CLIPS
        save_video(path, grid(clips, columns), fps=self.config.fps, scale=2)
        return path

    def _preview_prompts(self) -> list[str]:
        if self.preview_prompts is not None:
            return list(self.preview_prompts)[:PREVIEW_CLIPS]
        if not self.custom_data:
            return [p.prompt for p in evaluation_prompts()[:: max(1, 42 // PREVIEW_CLIPS)][:PREVIEW_CLIPS]]
        return [self.positions[i]["caption"] for i in range(PREVIEW_CLIPS)]

    # --- the loop ---------------------------------------------------------------------------------
    def _drop_metrics_after(self, step: int) -> None:
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = []
        for line in lines:
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except ValueError:  # a line cut short by a crash
                continue
        if len(kept) != len(lines):
            atomic_write(path, lambda tmp: Path(tmp).write_text("".join(k + "\n" for k in kept), encoding="utf-8"))

    def _train_step(self, batches) -> tuple[float, dict[str, float]]:
        """Forward and backward of this process's micro-batches of one step; returns the loss and
        metrics averaged over all micro-batches of all processes. Gradients are synchronised once,
        on the last micro-batch."""
        cfg = self.train_config
        total_loss, total_metrics = 0.0, {}
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            slot = micro * self.dist.world_size + self.dist.rank
            generator = slot_generator(cfg.seed, self.step, slot, self.device)
            last = micro == cfg.grad_accum - 1
            sync = (self.trained.no_sync() if isinstance(self.trained, DistributedDataParallel) and not last
                    else contextlib.nullcontext())
            with sync:
                with self.autocast():
                    loss, metrics = self._loss(batch, generator)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()} at step {self.step}; lower the lr")
                (loss / cfg.grad_accum).backward()
            total_loss += loss.item() / cfg.grad_accum
            for key, value in metrics.items():
                total_metrics[key] = total_metrics.get(key, 0.0) + value / cfg.grad_accum
        if self.dist.enabled:
            keys = sorted(total_metrics)
            values = mean_across(torch.tensor([total_loss] + [total_metrics[k] for k in keys], dtype=torch.float64,
                                              device=self.device), self.dist).tolist()
            total_loss, total_metrics = values[0], dict(zip(keys, values[1:]))
        return total_loss, total_metrics

    def _optimizer_step(self, batches) -> tuple[float, dict[str, float], float]:
        """One optimizer step (learning rate, forward/backward, clip, AdamW, EMA): loss, metrics, grad norm."""
        cfg = self.train_config
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(self.step, cfg)
        loss, metrics = self._train_step(batches)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update_parameters(self.model)
        self.step += 1
        return loss, metrics, float(grad_norm)

    def _stop_reason(self, started: float, max_minutes: Optional[float], stop_at: Optional[int],
                     stop: Optional[threading.Event]) -> Optional[str]:
        """Why the run stops after this step, the same on every rank: "signal", "time", "stop_at" or None."""
        signalled = stop is not None and stop.is_set()
        out_of_time = max_minutes is not None and (time.time() - started) > max_minutes * 60
        if self.dist.enabled:  # every rank stops at the same step
            flags = mean_across(torch.tensor([float(signalled), float(out_of_time)], device=self.device), self.dist)
            signalled, out_of_time = bool(flags[0] > 0), bool(flags[1] > 0)
        if signalled:
            return "signal"
        if out_of_time:
            return "time"
        return "stop_at" if self.step == stop_at else None

    def schedule(self, stop_at: Optional[int] = None) -> str:
        """The effective schedule, in one line (logged when a run starts)."""
        cfg = self.train_config
        end = min(cfg.steps, stop_at or cfg.steps)
        layout = (f"{self.dist.world_size} processes x {cfg.grad_accum} micro-batches of {self.micro_batch}"
                  if self.dist.world_size * cfg.grad_accum > 1 else "one micro-batch")
        stop = f", stopping at step {end}" if end < cfg.steps else ""
        return (f"{cfg.stage} stage, steps {self.step} -> {cfg.steps}{stop}: batch {cfg.batch_size} ({layout}), "
                f"lr {cfg.lr:g} (warm-up {cfg.warmup_steps} steps, then cosine to {cfg.lr * cfg.min_lr_ratio:g}), "
                f"EMA {cfg.ema_decay:g}, checkpoint every {cfg.checkpoint_every}, preview every {cfg.preview_every}, "
                f"log every {cfg.log_every} steps")

    def schedule_warnings(self) -> list[str]:
        """What the schedule asks for that a run of ``steps`` steps is too short to do."""
        cfg = self.train_config
        warnings = []
        if cfg.warmup_steps >= cfg.steps:
            warnings.append(f"the warm-up ({cfg.warmup_steps} steps) is as long as the whole run ({cfg.steps} "
                            f"steps): the learning rate never reaches --lr; lower --warmup-steps")
        if cfg.checkpoint_every >= cfg.steps:
            warnings.append(f"no checkpoint before the end (--checkpoint-every {cfg.checkpoint_every}, --steps "
                            f"{cfg.steps}); Ctrl-C still saves")
        if cfg.preview_every >= cfg.steps:
            warnings.append(f"no preview before the end (--preview-every {cfg.preview_every}, --steps {cfg.steps})")
        return warnings

    def run(self, max_minutes: Optional[float] = None, on_step: Optional[Callable[[int, float], None]] = None,
            stop_at: Optional[int] = None, stop: Optional[threading.Event] = None) -> TrainResult:
        """Train to ``config.steps``, or checkpoint and stop early: after ``max_minutes``, at step
        ``stop_at`` (the schedule still runs to ``config.steps``: a resumed run goes on exactly), or
        after the step during which ``stop`` was set (e.g. by a signal handler).

        The run holds ``run_dir``'s lock throughout; another live run there is refused. A run that
        is already at its end returns at once with ``TrainResult.finished_before``."""
        cfg = self.train_config
        if stop_at is not None and not is_int(stop_at, 1):
            raise ConfigError(f"stop_at must be a positive step number, got {stop_at!r}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(self.run_dir) if self.dist.is_main else None
        if lock is not None:
            lock.acquire()
        try:
            self._check_state_unchanged()
            barrier(self.dist)  # rank 0 may have created the run directory
            end = min(cfg.steps, stop_at or cfg.steps)
            if self.step >= end:
                return self._finished_result()
            if self._stop_reason(time.time(), None, None, stop) == "signal":  # set during the set-up
                return TrainResult(self.run_dir, self.step, self.run_dir / BUNDLE_FILE, self._last_logged_loss(),
                                   stopped="signal")
            if self.dist.is_main:
                logger.info("%s", self.schedule(stop_at))
                for warning in self.schedule_warnings():
                    logger.warning("%s", warning)
            return self._loop(end, max_minutes, on_step, stop_at, stop)
        finally:
            if lock is not None:
                lock.release()

    def _check_state_unchanged(self) -> None:
        """Refuse to run when another run wrote a checkpoint here after this trainer read the directory."""
        path = self.run_dir / STATE_FILE
        if self._resume and path.is_file() and read_state_header(path)[0] != self._read_step:
            saved = read_state_header(path)[0]
            raise CheckpointError(f"{path} moved to step {saved} after this trainer read it at step {self.step}: "
                                  f"another run used {self.run_dir} meanwhile; start again to resume from it")

    def _finished_result(self) -> TrainResult:
        if self.dist.is_main:
            logger.info("%s is already at step %d of %d: nothing to train", self.run_dir, self.step,
                        self.train_config.steps)
        if not (self.run_dir / BUNDLE_FILE).is_file():
            self.save(self._wall_before())
        return TrainResult(self.run_dir, self.step, self.run_dir / BUNDLE_FILE, self._last_logged_loss(),
                           finished_before=True)

    def _wall_before(self) -> float:
        path = self.run_dir / STATE_FILE
        return float(read_state_header(path)[1].get("wall_time_s", 0.0)) if path.is_file() else 0.0

    def _last_logged_loss(self) -> float:
        """The loss of the last metrics.jsonl record at or before this step (nan when there is none)."""
        path = self.run_dir / "metrics.jsonl"
        loss = float("nan")
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("step", 0) <= self.step:
                    loss = float(record.get("loss", loss))
        return loss

    def _loop(self, end: int, max_minutes: Optional[float], on_step, stop_at: Optional[int],
              stop: Optional[threading.Event]) -> TrainResult:
        cfg = self.train_config
        wall_before, started = self._wall_before(), time.time()
        self._train_mode()
        last_loss, reason = float("nan"), None
        window = [time.time(), 0]  # start time and samples of the current throughput window
        bar = metrics_file = None
        if self.dist.is_main:
            self._drop_metrics_after(self.step)  # lines a killed run logged after its last checkpoint
            metrics_file = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        if self.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.stage}", unit="step",
                       dynamic_ncols=True)
        try:
            with _logs_above(bar):
                batches = iter(self._loader(cfg.steps))
                while self.step < end:
                    last_loss, metrics, grad_norm = self._optimizer_step(batches)
                    window[1] += cfg.batch_size
                    if on_step is not None:
                        on_step(self.step, last_loss)
                    rate = window[1] / max(1e-6, time.time() - window[0])
                    if bar is not None:
                        bar.set_postfix(loss=f"{last_loss:.4f}", samples_s=f"{rate:.1f}")
                        bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                        self._log(metrics_file, last_loss, metrics, grad_norm, rate)
                        window = [time.time(), 0]
                    reason = self._stop_reason(started, max_minutes, stop_at, stop)
                    self._checkpoint_and_preview(wall_before + time.time() - started, force=reason is not None)
                    if reason is not None:
                        break
        finally:
            if metrics_file is not None:
                metrics_file.close()
            if bar is not None:
                bar.close()
        if reason == "time" and self.dist.is_main:
            logger.info("stopped after %.1f minutes at step %d", max_minutes, self.step)
        return TrainResult(self.run_dir, self.step, self.run_dir / BUNDLE_FILE, last_loss, stopped=reason)

    def _train_mode(self) -> None:
        self.model.train()
        if self.train_config.stage == "transformer":
            self.model.cvivit.eval()

    def _log(self, metrics_file, loss: float, metrics: dict[str, float], grad_norm: float, rate: float) -> None:
        if not self.dist.is_main:
            return
        record = {"step": self.step, "loss": loss, "lr": self.optimizer.param_groups[0]["lr"],
                  "grad_norm": grad_norm, "samples_per_s": rate, **metrics}
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        logger.info("step %d loss %.4f (%s) %.1f samples/s", self.step, loss,
                    ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), rate)

    def _checkpoint_and_preview(self, wall: float, force: bool) -> None:
        cfg = self.train_config
        if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps or force:
            self.save(wall)
        if (self.step % cfg.preview_every == 0 or self.step == cfg.steps) and self.dist.is_main:
            self.preview()
            self._train_mode()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores)"

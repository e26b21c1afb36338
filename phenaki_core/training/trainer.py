"""The two-stage training loop (Shapes World by default, or any dataset of clips or tokens).

    stage 1 (tokenizer):   C-ViViT reconstruction + LFQ commitment/entropy losses
    stage 2 (transformer): MaskGit + critic on the frozen tokenizer, frozen text encoder

Both stages share one loop: AdamW with warmup and cosine decay, gradient clipping, gradient
accumulation, EMA weights, bf16 autocast on CUDA, a progress bar with loss and throughput,
periodic animated previews, and atomic checkpoints that resume exactly. Under torchrun the
trained module runs in DistributedDataParallel and rank 0 alone logs and writes. Which items a
step reads, and its random draws, are pure functions of (seed, step, slot) (see distributed.py),
so a resumed run, on any number of processes, sees exactly the batches of an uninterrupted one.

Dataset items are dicts with either
    video (c, f, H, W) in [0, 1], caption (stage 2), optional frame_mask (f,) bool, or
    ids (t, y, x), text_embeds (n, d) + text_mask (n,) (precomputed shards, stage 2 only).

Run directory:
    train_state.safetensors   everything needed to resume
    bundle.safetensors        the EMA weights as a loadable model bundle
    previews/step_XXXXXXX.gif reconstructions (stage 1) or samples (stage 2)
    metrics.jsonl             one JSON line per log interval
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset

from ..checkpoint import atomic_write, load_bundle, read_metadata, save_bundle
from ..config import PhenakiConfig
from ..data import ShapesWorldConfig, ShapesWorldDataset, evaluation_prompts
from ..errors import CheckpointError, ConfigError
from ..phenaki import Phenaki, TextCondition
from ..sampling import SamplerConfig
from ..text import MINILM_SPEC, TextEncoderSpec
from ..video_io import grid, save_video
from .config import TrainConfig, lr_factor
from .distributed import (DistContext, EpochOrder, StepSampler, barrier, current_context, mean_across,
                          micro_batch_size, slot_generator)
from .state import TrainState, load_train_state, save_train_state

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.safetensors"
BUNDLE_FILE = "bundle.safetensors"
PREVIEW_CLIPS = 4
RESUME_MAY_CHANGE = ("steps", "grad_accum", "num_workers", "checkpoint_every", "preview_every", "log_every")


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    bundle: Path
    last_loss: float


class CaptionCache:
    """Encodes each distinct caption once, one at a time (so its embedding never depends on
    which other captions share its batch), and pads batches from the cache."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str], device: torch.device) -> TextCondition:
        for caption in captions:
            if caption not in self.cache:
                cond = self.encoder.encode([caption], device="cpu")
                self.cache[caption] = cond.embeds[0, cond.mask[0]]
        rows = [self.cache[c] for c in captions]
        length = max(r.shape[0] for r in rows)
        embeds = torch.stack([F.pad(r, (0, 0, 0, length - r.shape[0])) for r in rows])
        mask = torch.stack([torch.arange(length) < r.shape[0] for r in rows])
        return TextCondition(embeds.to(device), mask.to(device))


def _decay_groups(params: list[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only; none on norms, biases, embeddings, scales and null k/v."""
    decay, no_decay = [], []
    for name, param in params:
        is_matrix = param.ndim >= 2 and not any(s in name for s in ("emb", "null_kv"))
        (decay if is_matrix else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a.float().clamp(0, 1), b.float().clamp(0, 1)).item()
    return 10 * math.log10(1.0 / max(mse, 1e-10))


class Trainer:
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
        if state is not None:
            model_config = PhenakiConfig.from_dict(state.info["model_config"])
            saved_train = TrainConfig.from_dict(state.info["train_config"])
            # the run's recipe stays; the length, the process layout and the bookkeeping may change
            free = {name: getattr(train_config, name) for name in RESUME_MAY_CHANGE}
            if saved_train.replace(**free) != train_config:
                logger.warning("resuming %s with the settings it was started with (only %s may change)",
                               self.run_dir, ", ".join(RESUME_MAY_CHANGE))
            train_config = saved_train.replace(**free)
            self.history = state.info.get("history", [])
        default_spec = text_spec or getattr(text_encoder, "spec", None) or MINILM_SPEC
        self.text_spec = self._resolve_text_spec(state, init_from, default_spec, train_config)
        if self.text_spec.pooled_token and train_config.stage == "transformer" and not train_config.pooled_text_token:
            logger.info("the model this run continues reads a pooled sentence token; stage 2 keeps it")
            train_config = train_config.replace(pooled_text_token=True)
        self.config = model_config
        self.train_config = train_config
        if train_config.stage == "transformer" and model_config.maskgit.unconditional is False and text_encoder is None:
            raise ConfigError("stage 2 needs the text encoder (pass text_encoder=load_minilm())")
        if text_encoder is not None and self.text_spec.pooled_token:
            text_encoder = text_encoder.with_pooled_token()
        encoder_spec = getattr(text_encoder, "spec", None)
        if encoder_spec is not None and not encoder_spec.matches(self.text_spec):
            raise CheckpointError(f"this run's model reads text from {self.text_spec.describe()}, but the text "
                                  f"encoder given is {encoder_spec.describe()}; pass the matching encoder")
        self.micro_batch = micro_batch_size(train_config.batch_size, train_config.grad_accum, self.dist)

        with torch.random.fork_rng(devices=[]):  # deterministic init without touching the caller's RNG
            torch.manual_seed(train_config.seed)
            self.model = Phenaki(model_config)
        if state is None:
            if train_config.decoder_only and init_from is None:
                raise ConfigError("decoder_only fine-tunes the decoder of a trained tokenizer; name that model "
                                  "with init_from (--init-from)")
            self._warm_start(init_from, tokenizer_from)
        self.model.to(self.device)
        self.model.cvivit.requires_grad_(train_config.stage == "tokenizer" and not train_config.decoder_only)
        if train_config.decoder_only:
            for module in self.model.cvivit.decoder_modules():
                module.requires_grad_(True)
        self.params = self._stage_parameters()
        names = {id(p): n for n, p in self.model.named_parameters()}
        self.optimizer = torch.optim.AdamW(
            _decay_groups([(names[id(p)], p) for p in self.params], train_config.weight_decay),
            lr=train_config.lr, betas=(train_config.beta1, train_config.beta2))
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(train_config.ema_decay),
                                 use_buffers=True)
        self.step = 0
        if state is not None:
            self.model.load_state_dict(state.model, strict=True)
            self.ema.load_state_dict(state.ema, strict=True)
            self.optimizer.load_state_dict(state.optimizer)
            self.step = state.step
            logger.info("resumed %s at step %d", self.run_dir, self.step)
        self.trained = self._trained_module()

        frames = min(17, model_config.max_frames)
        self.data_config = ShapesWorldConfig(
            image_size=model_config.cvivit.image_size, num_frames=frames,
            temporal_patch=model_config.cvivit.temporal_patch_size, continuation_prob=train_config.continuation_prob,
            prime_frames=min(5, frames - model_config.cvivit.temporal_patch_size),
            paraphrase_prob=train_config.paraphrase_prob, fps=int(model_config.fps))
        self.custom_data = dataset is not None
        self.dataset = dataset if dataset is not None else ShapesWorldDataset(self.data_config, seed=train_config.data_seed)
        self.positions = EpochOrder(self.dataset, seed=train_config.data_seed,
                                    shuffle=not getattr(self.dataset, "is_procedural", False))
        self.collate_fn = collate_fn
        self.preview_prompts = preview_prompts
        self.captions = CaptionCache(text_encoder) if text_encoder is not None else None

    # --- setup ------------------------------------------------------------------------------------
    @staticmethod
    def _resolve_text_spec(state, init_from, default: TextEncoderSpec, config: TrainConfig) -> TextEncoderSpec:
        """The text condition this run trains for: the resumed run's, else the warm start's, else
        ``default``; stage 2's ``pooled_text_token`` adds the pooled token to it."""
        if state is not None and "text_encoder" in state.info:
            return TextEncoderSpec.from_dict(state.info["text_encoder"])
        spec = read_metadata(init_from)[1] if init_from is not None else default
        return replace(spec, pooled_token=True) if config.pooled_text_token else spec

    def _warm_start(self, init_from, tokenizer_from) -> None:
        if init_from is not None:
            bundle = load_bundle(init_from)
            if bundle.model.config != self.config:
                raise CheckpointError(f"{init_from} has a different architecture than the requested config")
            self.model.load_state_dict(bundle.model.state_dict(), strict=True)
            self.history = list(bundle.extra.get("history", []))
            logger.info("warm start from %s", init_from)
        if tokenizer_from is not None:
            bundle = load_bundle(tokenizer_from)
            if bundle.model.config.cvivit != self.config.cvivit:
                raise CheckpointError(f"the tokenizer in {tokenizer_from} has a different config "
                                      f"({bundle.model.config.cvivit}) than this model ({self.config.cvivit})")
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

    def _autocast(self):
        precision = self.train_config.precision
        if self.device.type == "cuda" and precision in ("auto", "bf16"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

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
        if text is not None:
            text = self._augment_text(text, generator)
        out = self.trained(ids, text=text, video_frame_mask=frame_mask, generator=generator)
        metrics = {"gen": out.generator_loss.item()}
        if out.critic_loss is not None:
            metrics["critic"] = out.critic_loss.item()
        return out.loss, metrics

    def _augment_text(self, text: TextCondition, generator: torch.Generator) -> TextCondition:
        """Stage 2's caption augmentations, in a fixed order: word dropout, pooled-only captions, noise."""
        cfg = self.train_config
        if cfg.text_token_drop > 0:
            keep = torch.rand(text.mask.shape, generator=generator, device=self.device) >= cfg.text_token_drop
            keep[:, 0] = True
            text = TextCondition(text.embeds, text.mask & keep)
        if cfg.text_pooled_only > 0:  # whole captions reduced to their pooled token
            pooled_only = torch.rand(text.mask.shape[0], generator=generator, device=self.device) < cfg.text_pooled_only
            keep = ~pooled_only[:, None] | (torch.arange(text.mask.shape[1], device=self.device) == 0)
            text = TextCondition(text.embeds, text.mask & keep)
        if cfg.text_noise > 0:
            rms = text.embeds.pow(2).mean(-1, keepdim=True).sqrt()  # b l 1
            noise = torch.randn(text.embeds.shape, generator=generator, device=self.device)
            text = TextCondition(text.embeds + cfg.text_noise * rms * noise, text.mask)
        return text

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
            logger.info("step %d: preview reconstruction PSNR %.2f dB", self.step, _psnr(recon, video))
            clips = [c for pair in zip(video, recon) for c in pair]
            columns = 2
        else:
            prompts = self._preview_prompts()
            if self.captions is None or not prompts:
                return path
            text = self.captions(prompts, self.device)
            frames = min(17, self.config.max_frames)
            ids = model.sample(text, num_frames=frames, sampler=SamplerConfig(steps=12),
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
                with self._autocast():
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

    def run(self, max_minutes: Optional[float] = None,
            on_step: Optional[Callable[[int, float], None]] = None, stop_at: Optional[int] = None) -> TrainResult:
        """Train to ``config.steps``, or checkpoint and stop early: after ``max_minutes``, or at step
        ``stop_at`` (the schedule still runs to ``config.steps``: a resumed run goes on exactly)."""
        cfg = self.train_config
        total = cfg.steps
        if stop_at is not None and (isinstance(stop_at, bool) or not isinstance(stop_at, int) or stop_at < 1):
            raise ConfigError(f"stop_at must be a positive step number, got {stop_at!r}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        wall_before = 0.0
        if (self.run_dir / STATE_FILE).is_file():
            wall_before = float(load_train_state(self.run_dir / STATE_FILE).info.get("wall_time_s", 0.0))
        barrier(self.dist)  # rank 0 may have created the run directory and read the state
        start = time.time()
        self.model.train()
        if cfg.stage == "transformer":
            self.model.cvivit.eval()
        bar = None
        if self.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, initial=self.step, desc=f"train {cfg.stage}", unit="step", dynamic_ncols=True)
        last_loss = float("nan")
        window_start, window_samples = time.time(), 0
        metrics_file = None
        if self.dist.is_main:
            self._drop_metrics_after(self.step)  # lines a killed run logged after its last checkpoint
            metrics_file = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        try:
            batches = iter(self._loader(total))
            while self.step < min(total, stop_at or total):
                for group in self.optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(self.step, cfg)
                loss_value, metrics = self._train_step(batches)
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.ema.update_parameters(self.model)
                self.step += 1
                last_loss = loss_value
                window_samples += cfg.batch_size
                if on_step is not None:
                    on_step(self.step, last_loss)
                if bar is not None:
                    rate = window_samples / max(1e-6, time.time() - window_start)
                    bar.set_postfix(loss=f"{last_loss:.4f}", samples_s=f"{rate:.1f}")
                    bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == total:
                    rate = window_samples / max(1e-6, time.time() - window_start)
                    if self.dist.is_main:
                        record = {"step": self.step, "loss": last_loss, "lr": self.optimizer.param_groups[0]["lr"],
                                  "grad_norm": float(grad_norm), "samples_per_s": rate, **metrics}
                        metrics_file.write(json.dumps(record) + "\n")
                        metrics_file.flush()
                        logger.info("step %d loss %.4f (%s) %.1f samples/s", self.step, last_loss,
                                    ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), rate)
                    window_start, window_samples = time.time(), 0
                out_of_time = max_minutes is not None and (time.time() - start) > max_minutes * 60
                if self.dist.enabled:  # every rank stops at the same step
                    flag = torch.tensor(float(out_of_time), device=self.device)
                    out_of_time = bool(mean_across(flag, self.dist) > 0)
                stopping = out_of_time or self.step == stop_at
                if self.step % cfg.checkpoint_every == 0 or self.step == total or stopping:
                    self.save(wall_before + time.time() - start)
                if (self.step % cfg.preview_every == 0 or self.step == total) and self.dist.is_main:
                    self.preview()
                    self.model.train()
                    if cfg.stage == "transformer":
                        self.model.cvivit.eval()
                if out_of_time:
                    logger.info("stopping after %.1f minutes at step %d (resume to continue)", max_minutes,
                                self.step)
                if stopping:
                    break
        finally:
            if metrics_file is not None:
                metrics_file.close()
            if bar is not None:
                bar.close()
        if not (self.run_dir / BUNDLE_FILE).is_file():
            self.save(wall_before + time.time() - start)
        return TrainResult(self.run_dir, self.step, self.run_dir / BUNDLE_FILE, last_loss)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores)"

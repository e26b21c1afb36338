"""The two-stage training loop on Shapes World.

    stage 1 (tokenizer):   C-ViViT reconstruction + LFQ commitment/entropy losses
    stage 2 (transformer): MaskGit + critic on the frozen tokenizer, frozen text encoder

Both stages share one loop: AdamW with warmup and cosine decay, gradient clipping, EMA weights,
bf16 autocast on CUDA, a progress bar with loss and throughput, periodic animated previews, and
atomic checkpoints that resume exactly (model, EMA, optimizer, RNG and data position). Data
item i of step s is ``dataset[s * batch + i]``, a pure function of the seed, so a resumed run
sees exactly the batches the uninterrupted run would have seen.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from ..checkpoint import load_bundle, save_bundle
from ..config import PhenakiConfig
from ..data import ShapesWorldConfig, ShapesWorldDataset, evaluation_prompts
from ..errors import CheckpointError, ConfigError
from ..phenaki import Phenaki, TextCondition
from ..sampling import SamplerConfig
from ..text import MINILM_SPEC, TextEncoderSpec
from ..video_io import grid, save_video
from .config import TrainConfig, lr_factor
from .state import TrainState, load_train_state, save_train_state

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.safetensors"
BUNDLE_FILE = "bundle.safetensors"
PREVIEW_CLIPS = 4


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
                 text_spec: TextEncoderSpec = MINILM_SPEC, resume: bool = True, progress: bool = True):
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.progress = progress
        self.text_spec = text_spec
        self.history: list[dict[str, Any]] = []
        state_path = self.run_dir / STATE_FILE
        state = load_train_state(state_path) if resume and state_path.is_file() else None
        if state is not None:
            model_config = PhenakiConfig.from_dict(state.info["model_config"])
            saved_train = TrainConfig.from_dict(state.info["train_config"])
            if saved_train.replace(steps=train_config.steps) != train_config.replace(steps=train_config.steps):
                logger.warning("resuming %s with the settings it was started with (only steps may change)",
                               self.run_dir)
            train_config = saved_train.replace(steps=train_config.steps)
            self.history = state.info.get("history", [])
        self.config = model_config
        self.train_config = train_config
        if train_config.stage == "transformer" and model_config.maskgit.unconditional is False and text_encoder is None:
            raise ConfigError("stage 2 needs the text encoder (pass text_encoder=load_minilm())")

        with torch.random.fork_rng(devices=[]):  # deterministic init without touching the caller's RNG
            torch.manual_seed(train_config.seed)
            self.model = Phenaki(model_config)
        if state is None:
            self._warm_start(init_from, tokenizer_from)
        self.model.to(self.device)
        self.model.cvivit.requires_grad_(train_config.stage == "tokenizer")
        self.params = self._stage_parameters()
        names = {id(p): n for n, p in self.model.named_parameters()}
        self.optimizer = torch.optim.AdamW(
            _decay_groups([(names[id(p)], p) for p in self.params], train_config.weight_decay),
            lr=train_config.lr, betas=(train_config.beta1, train_config.beta2))
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(train_config.ema_decay),
                                 use_buffers=True)
        self.generator = torch.Generator(device=self.device).manual_seed(train_config.seed)
        self.step = 0
        if state is not None:
            self.model.load_state_dict(state.model, strict=True)
            self.ema.load_state_dict(state.ema, strict=True)
            self.optimizer.load_state_dict(state.optimizer)
            self.generator.set_state(state.generator)
            self.step = state.step
            logger.info("resumed %s at step %d", self.run_dir, self.step)

        frames = min(17, model_config.max_frames)
        self.data_config = ShapesWorldConfig(
            image_size=model_config.cvivit.image_size, num_frames=frames,
            temporal_patch=model_config.cvivit.temporal_patch_size, continuation_prob=train_config.continuation_prob,
            prime_frames=min(5, frames - model_config.cvivit.temporal_patch_size),
            paraphrase_prob=train_config.paraphrase_prob, fps=int(model_config.fps))
        self.dataset = ShapesWorldDataset(self.data_config, seed=train_config.data_seed)
        self.captions = CaptionCache(text_encoder) if text_encoder is not None else None

    # --- setup ------------------------------------------------------------------------------------
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
            if init_from is None:
                self.history = [h for h in bundle.extra.get("history", []) if h.get("stage") == "tokenizer"]
            logger.info("tokenizer from %s", tokenizer_from)

    def _stage_parameters(self) -> list[torch.nn.Parameter]:
        if self.train_config.stage == "tokenizer":
            return list(self.model.cvivit.parameters())
        return self.model.transformer_parameters()

    def _autocast(self):
        precision = self.train_config.precision
        if self.device.type == "cuda" and precision in ("auto", "bf16"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _loader(self, total_steps: int) -> DataLoader:
        batch = self.train_config.batch_size
        indices = range(self.step * batch, total_steps * batch)
        return DataLoader(self.dataset, batch_size=batch, sampler=indices, num_workers=self.train_config.num_workers,
                          drop_last=True, persistent_workers=False)

    # --- losses -----------------------------------------------------------------------------------
    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        video = batch["video"].to(self.device, non_blocking=True)
        cfg = self.train_config
        if cfg.stage == "tokenizer":
            out = self.model.cvivit(video)
            loss = out.recon_loss + cfg.commit_weight * out.commit_loss + cfg.entropy_weight * out.entropy_loss
            return loss, {"recon": out.recon_loss.item(), "entropy": out.entropy_loss.item()}
        with torch.no_grad():
            self.model.cvivit.eval()
            ids = self.model.cvivit.encode_to_ids(video)
        text = self.captions(list(batch["caption"]), self.device) if self.captions is not None else None
        out = self.model(ids, text=text, generator=self.generator)
        metrics = {"gen": out.generator_loss.item()}
        if out.critic_loss is not None:
            metrics["critic"] = out.critic_loss.item()
        return out.loss, metrics

    # --- checkpoints and previews -----------------------------------------------------------------
    def _history(self, wall: float) -> list[dict[str, Any]]:
        cfg = self.train_config
        record = {"stage": cfg.stage, "steps": self.step, "batch_size": cfg.batch_size, "lr": cfg.lr,
                  "wall_time_s": round(wall, 1), "device": _device_name(self.device)}
        return self.history + [record]

    def save(self, wall: float) -> None:
        history = self._history(wall)
        info = {"model_config": self.config.to_dict(), "train_config": self.train_config.to_dict(),
                "history": self.history, "wall_time_s": wall}
        save_train_state(self.run_dir / STATE_FILE, TrainState(
            self.step, self.model.state_dict(), self.ema.state_dict(), self.optimizer.state_dict(),
            self.generator.get_state(), info))
        save_bundle(self.run_dir / BUNDLE_FILE, self.ema.module, self.text_spec,
                    extra={"history": history, "train_config": self.train_config.to_dict()})

    @torch.no_grad()
    def preview(self) -> Path:
        model = self.ema.module.eval()
        path = self.run_dir / "previews" / f"step_{self.step:07d}.gif"
        if self.train_config.stage == "tokenizer":
            held_out = ShapesWorldDataset(self.data_config, seed=self.train_config.data_seed + 1_000_003)
            video = torch.stack([held_out[i]["video"] for i in range(PREVIEW_CLIPS)]).to(self.device)
            recon = model.cvivit.decode_from_ids(model.cvivit.encode_to_ids(video))
            logger.info("step %d: preview reconstruction PSNR %.2f dB", self.step, _psnr(recon, video))
            clips = [c for pair in zip(video, recon) for c in pair]
            columns = 2
        else:
            prompts = [p.prompt for p in evaluation_prompts()[:: max(1, 42 // PREVIEW_CLIPS)][:PREVIEW_CLIPS]]
            text = self.captions(prompts, self.device)
            frames = self.data_config.num_frames
            ids = model.sample(text, num_frames=frames, sampler=SamplerConfig(steps=12),
                               generator=torch.Generator(device=self.device).manual_seed(0))
            clips = list(model.cvivit.decode_from_ids(ids))
            columns = PREVIEW_CLIPS
        save_video(path, grid(clips, columns), fps=self.config.fps, scale=2)
        return path

    # --- the loop ---------------------------------------------------------------------------------
    def run(self, max_minutes: Optional[float] = None,
            on_step: Optional[Callable[[int, float], None]] = None) -> TrainResult:
        cfg = self.train_config
        total = cfg.steps
        self.run_dir.mkdir(parents=True, exist_ok=True)
        wall_before = 0.0
        if (self.run_dir / STATE_FILE).is_file():
            wall_before = float(load_train_state(self.run_dir / STATE_FILE).info.get("wall_time_s", 0.0))
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
        metrics_file = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        try:
            for batch in self._loader(total):
                for group in self.optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(self.step, cfg)
                with self._autocast():
                    loss, metrics = self._loss(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()} at step {self.step}; lower the lr")
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.ema.update_parameters(self.model)
                self.step += 1
                last_loss = loss.item()
                window_samples += cfg.batch_size
                if on_step is not None:
                    on_step(self.step, last_loss)
                if bar is not None:
                    rate = window_samples / max(1e-6, time.time() - window_start)
                    bar.set_postfix(loss=f"{last_loss:.4f}", samples_s=f"{rate:.1f}")
                    bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == total:
                    rate = window_samples / max(1e-6, time.time() - window_start)
                    record = {"step": self.step, "loss": last_loss, "lr": self.optimizer.param_groups[0]["lr"],
                              "grad_norm": float(grad_norm), "samples_per_s": rate, **metrics}
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    logger.info("step %d loss %.4f (%s) %.1f samples/s", self.step, last_loss,
                                ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), rate)
                    window_start, window_samples = time.time(), 0
                out_of_time = max_minutes is not None and (time.time() - start) > max_minutes * 60
                if self.step % cfg.checkpoint_every == 0 or self.step == total or out_of_time:
                    self.save(wall_before + time.time() - start)
                if self.step % cfg.preview_every == 0 or self.step == total:
                    self.preview()
                    self.model.train()
                    if cfg.stage == "transformer":
                        self.model.cvivit.eval()
                if out_of_time:
                    logger.info("stopping after %.1f minutes at step %d (resume to continue)", max_minutes,
                                self.step)
                    break
        finally:
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

"""The MaskGIT sampling loop, as a pure function of a logits callback.

The loop knows nothing about transformers, text or priming: it takes ``logits_fn(ids) -> logits``
(guidance already applied) and optionally ``critic_fn(ids) -> scores``, and all randomness comes
from the explicit ``torch.Generator``. Same generator state, same output, bit for bit on the CPU.

Per step s of S (all N positions start masked):
    1. re-mask the ``round(N * cos(pi/2 * s/S))`` positions with the highest scores (s > 0)
    2. logits = logits_fn(ids)
    3. sample masked positions with Gumbel noise at temperature ``T0 * (S-1-s)/S``
    4. scores for the next step:
       - critic:     critic_fn(ids) + noise_K * (U - 0.5) * schedule(s); any token may be re-masked
       - confidence: -(log p(sampled) + choice_temperature * (1 - (s+1)/S) * Gumbel);
                     only tokens that were masked this step can be re-masked
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .errors import ConfigError

logger = logging.getLogger(__name__)

NOISE_SCHEDULES = ("fixed", "decay", "increase")
COMPILE_DEVICES = ("cuda",)  # where compile=True uses torch.compile; elsewhere it runs eagerly
REMASK_MODES = ("auto", "confidence", "critic")


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 18
    cond_scale: float = 3.0
    temperature: float = 0.9  # starting token temperature, annealed linearly to 0
    # confidence: re-mask the least sure tokens (MaskGIT). critic: the token critic's choice; auto: the
    # critic when the model has one. Confidence is the default: on the bundled model the critic keeps
    # re-masking the first frame's tokens until the last step, which then often fills it as background.
    remask: str = "confidence"
    choice_temperature: float = 4.5  # Gumbel noise on confidence scores (MaskGIT), annealed to 0
    critic_noise_schedule: str = "decay"
    noise_k: float = 1.0  # critic score noise amplitude (Token-Critic, sec. 3.2)

    def __post_init__(self) -> None:
        def finite(name: str, value: float, low: float = 0.0) -> None:
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                    and value >= low):
                raise ConfigError(f"{name} must be a finite number >= {low}, got {value!r}")

        if not (isinstance(self.steps, int) and not isinstance(self.steps, bool) and self.steps >= 1):
            raise ConfigError(f"steps must be an integer >= 1, got {self.steps!r}")
        finite("cond_scale", self.cond_scale)
        finite("temperature", self.temperature)
        finite("choice_temperature", self.choice_temperature)
        finite("noise_k", self.noise_k)
        if self.remask not in REMASK_MODES:
            raise ConfigError(f"remask must be one of {REMASK_MODES}, got {self.remask!r}")
        if self.critic_noise_schedule not in NOISE_SCHEDULES:
            raise ConfigError(f"critic_noise_schedule must be one of {NOISE_SCHEDULES}, "
                              f"got {self.critic_noise_schedule!r}")


@dataclass
class SamplerStep:
    """Passed to the per-step callback (progress bars, previews, cancellation)."""

    step: int  # 0-based index of the step that just finished
    steps: int
    ids: torch.Tensor  # b n, current tokens (fixed + freshly sampled)
    mask: torch.Tensor  # b n bool, positions that were masked going into this step


LogitsFn = Callable[[torch.Tensor], torch.Tensor]
CriticFn = Callable[[torch.Tensor], torch.Tensor]


def num_masked(num_tokens: int, step: int, steps: int) -> int:
    """Tokens left masked at the start of ``step`` (cosine schedule, at least 1)."""
    return max(1, round(num_tokens * math.cos(math.pi / 2 * step / steps)))


def gumbel_noise(shape: torch.Size, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device)
    neg_log_u = -torch.log(u.clamp_min(1e-20))  # in (0, 46]
    return -torch.log(neg_log_u.clamp_min(1e-20))


def gumbel_sample(logits: torch.Tensor, temperature: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Sample ids from logits (..., V); temperature 0 is argmax."""
    if temperature <= 1e-10:
        return logits.argmax(dim=-1)
    noise = gumbel_noise(logits.shape, generator, logits.device)
    return (logits.float() / temperature + noise).argmax(dim=-1)


def critic_noise_multiplier(schedule: str, step: int, steps: int) -> float:
    if schedule == "fixed":
        return 1.0
    if schedule == "decay":
        return (steps - (step + 1)) / steps
    if schedule == "increase":
        return (step + 1) / steps
    raise ConfigError(f"unknown critic noise schedule {schedule!r}; choose one of {NOISE_SCHEDULES}")


def maybe_compile(fn: Callable[..., torch.Tensor], device: torch.device, enabled: bool,
                  mode: Optional[str] = None) -> Callable[..., torch.Tensor]:
    """``torch.compile`` a fixed-shape model callback (CUDA graphs on CUDA), falling back to eager.

    Every sampling step calls the callback with tensors of the same shapes, so one compilation
    (``mode="reduce-overhead"``: inductor kernels replayed as a CUDA graph) serves all steps. On
    other devices, or if compilation fails at any point (no compiler, unsupported op, old torch),
    the eager callback runs instead and a warning says why; the outputs agree within float
    tolerance either way.
    """
    if not enabled:
        return fn
    if device.type not in COMPILE_DEVICES or not hasattr(torch, "compile"):
        logger.info("compile=True: torch.compile is used on %s only; sampling eagerly on %s",
                    "/".join(COMPILE_DEVICES), device.type)
        return fn
    try:
        compiled = torch.compile(fn, mode=mode or ("reduce-overhead" if device.type == "cuda" else None),
                                 dynamic=False)
    except Exception as exc:  # noqa: BLE001 - any failure means: run eagerly
        logger.warning("torch.compile is unavailable (%s: %s); sampling eagerly", type(exc).__name__, exc)
        return fn
    state = {"fn": compiled}

    def call(*args, **kwargs):
        current = state["fn"]
        if current is fn:
            return fn(*args, **kwargs)
        try:
            return current(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - compilation errors surface on the first call
            logger.warning("torch.compile failed (%s: %s); sampling eagerly", type(exc).__name__, exc)
            state["fn"] = fn
            return fn(*args, **kwargs)

    return call


def sample_tokens(
    logits_fn: LogitsFn,
    *,
    batch: int,
    num_tokens: int,
    mask_id: int,
    config: SamplerConfig,
    device: torch.device,
    generator: Optional[torch.Generator] = None,
    critic_fn: Optional[CriticFn] = None,
    callback: Optional[Callable[[SamplerStep], None]] = None,
) -> torch.Tensor:
    """Run the MaskGIT loop and return ids (batch, num_tokens)."""
    use_critic = config.remask == "critic" or (config.remask == "auto" and critic_fn is not None)
    if use_critic and critic_fn is None:
        raise ConfigError("remask='critic' needs a model with a token critic; use remask='confidence'")

    steps = config.steps
    ids = torch.full((batch, num_tokens), mask_id, dtype=torch.long, device=device)
    mask = torch.ones((batch, num_tokens), dtype=torch.bool, device=device)
    scores: Optional[torch.Tensor] = None

    for step in range(steps):
        if step > 0:
            k = num_masked(num_tokens, step, steps)
            top = scores.topk(k, dim=-1).indices
            mask = torch.zeros_like(mask).scatter_(1, top, True)
            ids = ids.masked_fill(mask, mask_id)

        logits = logits_fn(ids)  # b n V
        temperature = config.temperature * (steps - 1 - step) / steps
        sampled = gumbel_sample(logits, temperature, generator)
        ids = torch.where(mask, sampled, ids)

        if step < steps - 1:
            if use_critic:
                noise = torch.rand(ids.shape, generator=generator, device=device) - 0.5
                mult = critic_noise_multiplier(config.critic_noise_schedule, step, steps)
                scores = critic_fn(ids).float() + config.noise_k * mult * noise
            else:
                log_probs = logits.float().log_softmax(-1).gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
                anneal = config.choice_temperature * (1 - (step + 1) / steps)
                if anneal > 0:
                    log_probs = log_probs + anneal * gumbel_noise(log_probs.shape, generator, device)
                scores = (-log_probs).masked_fill(~mask, float("-inf"))  # fixed tokens stay fixed
        if callback is not None:
            callback(SamplerStep(step, steps, ids, mask))
    return ids

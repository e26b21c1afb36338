"""The MaskGIT sampling loop, as a pure function of model callbacks.

The loop knows nothing about transformers, text or priming. It takes
``logits_fn(ids, positions) -> logits`` (the guided logits at the given positions only) and,
for critic re-masking, ``critic_fn(ids) -> scores``. All randomness comes from a counter-based
generator keyed by one seed, which the caller draws from its ``torch.Generator`` before the loop.

Per step s of S (all N positions start masked):
    1. logits = logits_fn(ids, positions): only the k_s masked positions, k_s = round(N cos(pi/2 s/S))
    2. sample them with Gumbel noise at temperature ``T0 * (S-1-s)/S``; keep the chosen token's log-prob
    3. choose the k_{s+1} positions to re-mask:
       - critic:     top critic_fn(ids) + critic_noise * (U - 0.5) * schedule(s) over all positions
       - confidence: top -(log p(sampled) + choice_temperature * (1 - (s+1)/S) * Gumbel), among
                     the positions sampled this step (MaskGIT: fixed tokens stay fixed)

Everything that depends on s (k_s, temperatures, noise scales) is a host constant computed before
the loop, and every tensor has a shape fixed by s: a step has no host-device sync and no
data-dependent shape, so a whole sample can be captured as one CUDA graph or traced by
``torch.compile(fullgraph=True)``. Same seed, same output, bit for bit, on any one device.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .errors import ConfigError
from .validation import is_int, is_number

logger = logging.getLogger(__name__)

NOISE_SCHEDULES = ("fixed", "decay", "increase")
REMASK_MODES = ("auto", "confidence", "critic")


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 18
    cond_scale: float = 3.0
    temperature: float = 0.9  # starting token temperature, annealed linearly to 0
    # confidence: re-mask the least sure tokens (MaskGIT). critic: the token critic's choice; auto: the
    # critic when the model has one. Confidence is the default: a critic can keep re-masking the first
    # frame's tokens (frame 0 is patched alone) until the last step, which then fills them as background.
    remask: str = "confidence"
    choice_temperature: float = 4.5  # Gumbel noise on confidence scores (MaskGIT), annealed to 0
    critic_noise_schedule: str = "decay"
    critic_noise: float = 1.0  # amplitude of the noise on the critic's scores (Token-Critic, sec. 3.2)

    def __post_init__(self) -> None:
        def finite(name: str, value: float, low: float = 0.0) -> None:
            if not is_number(value, low):
                raise ConfigError(f"{name} must be a finite number >= {low}, got {value!r}")

        if not is_int(self.steps, 1):
            raise ConfigError(f"steps must be an integer >= 1, got {self.steps!r}")
        finite("cond_scale", self.cond_scale)
        finite("temperature", self.temperature)
        finite("choice_temperature", self.choice_temperature)
        finite("critic_noise", self.critic_noise)
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
    positions: torch.Tensor  # b k, the positions that were masked going into this step
    prime: Optional[torch.Tensor] = None  # b tp y x, the prime's ids the new tokens follow (set by guided)

    @property
    def mask(self) -> torch.Tensor:
        """b n bool: True at the positions that were masked going into this step."""
        return torch.zeros(self.ids.shape, dtype=torch.bool, device=self.ids.device).scatter_(1, self.positions, True)


LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (ids b n, positions b k) -> logits b k V
CriticFn = Callable[[torch.Tensor], torch.Tensor]  # ids b n -> scores b n (high = re-mask)


def num_masked(num_tokens: int, step: int, steps: int) -> int:
    """Tokens left masked at the start of ``step`` (cosine schedule, at least 1)."""
    return max(1, round(num_tokens * math.cos(math.pi / 2 * step / steps)))


def critic_noise_multiplier(schedule: str, step: int, steps: int) -> float:
    if schedule == "fixed":
        return 1.0
    if schedule == "decay":
        return (steps - (step + 1)) / steps
    if schedule == "increase":
        return (step + 1) / steps
    raise ConfigError(f"unknown critic noise schedule {schedule!r}; choose one of {NOISE_SCHEDULES}")


@dataclass(frozen=True)
class StepPlan:
    """The host constants of one step."""

    masked: int  # k_s: positions sampled this step
    next_masked: int  # k_{s+1}: positions re-masked after it (0 after the last step)
    temperature: float  # token temperature
    choice_temperature: float  # Gumbel scale on confidence scores
    critic_noise: float  # amplitude of the uniform noise on critic scores


def plan_steps(num_tokens: int, config: "SamplerConfig") -> list[StepPlan]:
    steps = config.steps
    plans = []
    for s in range(steps):
        plans.append(StepPlan(
            masked=num_tokens if s == 0 else num_masked(num_tokens, s, steps),
            next_masked=0 if s == steps - 1 else num_masked(num_tokens, s + 1, steps),
            temperature=config.temperature * (steps - 1 - s) / steps,
            choice_temperature=config.choice_temperature * (1 - (s + 1) / steps),
            critic_noise=config.critic_noise * critic_noise_multiplier(config.critic_noise_schedule, s, steps)))
    return plans


# --- counter-based noise ----------------------------------------------------------------------------
# Noise is a hash of (seed, step, stream, row, position, vocabulary id): pure integer tensor ops, so
# it traces into a compiled graph and replays inside a CUDA graph with the seed as a tensor input,
# and the same seed gives the same noise on every device. Values are 32-bit, held in int64.
_M32 = 0xFFFFFFFF
_STREAM_TOKENS, _STREAM_SCORES = 1, 2


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (lowbias32): every input bit flips each output bit with p ~ 1/2.
    (In place on its own first result: these tensors span the vocabulary of every masked token.)"""
    x = x ^ (x >> 16)
    x.mul_(0x7FEB352D).bitwise_and_(_M32)  # int64 products may wrap; the low 32 bits stay exact
    x.bitwise_xor_(x >> 15)
    x.mul_(0x846CA68B).bitwise_and_(_M32)
    return x.bitwise_xor_(x >> 16)


def draw_seed(generator: Optional[torch.Generator], device: torch.device | str) -> torch.Tensor:
    """One int64 seed in [0, 2^32) on ``device``, drawn from ``generator`` (the global RNG if None)."""
    where = generator.device if generator is not None else torch.device("cpu")
    seed = torch.randint(0, 2 ** 32, (), generator=generator, device=where, dtype=torch.int64)
    return seed.to(device)


def position_keys(seed: torch.Tensor, step: int, stream: int, positions: torch.Tensor) -> torch.Tensor:
    """b k int64 keys for the noise at ``positions`` (b k) of each row."""
    rows, length = positions.shape[0], 1 << 20  # sequences are far shorter than 2^20 tokens
    base = _mix32((seed & _M32) ^ _mix32(torch.full_like(seed, step * 4 + stream)))
    row = torch.arange(rows, device=positions.device, dtype=torch.int64)[:, None]
    return _mix32((base + ((row * length + positions) & _M32)) & _M32)


def uniform_noise(keys: torch.Tensor) -> torch.Tensor:
    """Uniform float32 in (0, 1), one per key: 24 bits of the hash, centred in their bin."""
    return _mix32(keys).bitwise_right_shift_(8).float().add_(0.5).mul_(1.0 / (1 << 24))


def gumbel_from_keys(keys: torch.Tensor, vocab: Optional[int] = None) -> torch.Tensor:
    """Standard Gumbel noise: keys (...) -> (...), or (..., vocab) with one value per vocabulary id."""
    if vocab is not None:
        ids = torch.arange(vocab, device=keys.device, dtype=torch.int64) * 0x9E3779B9 & _M32
        keys = keys[..., None] ^ ids
    return uniform_noise(keys).log_().neg_().log_().neg_()  # -log(-log(u))


# --- the step tail ----------------------------------------------------------------------------------
def choose_tokens(logits: torch.Tensor, temperature: float, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row of ``logits`` (b k V, any float dtype) and return (ids, log p(id)).

    Gumbel-max at ``temperature`` (argmax at 0); the log-probability is under the untempered
    distribution (the confidence MaskGIT re-masks by). One pass over the logits when compiled.
    """
    scores = logits.float()
    if temperature > 1e-10:
        sampled = gumbel_from_keys(keys, scores.shape[-1]).add_(scores / temperature).argmax(-1)
    else:
        sampled = scores.argmax(-1)
    chosen = scores.gather(-1, sampled[..., None]).squeeze(-1)
    return sampled, chosen - scores.logsumexp(-1)


ChooseFn = Callable[[torch.Tensor, float, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def sampling_step(ids: torch.Tensor, positions: torch.Tensor, plan: StepPlan, step: int, seed: torch.Tensor,
                  logits_fn: LogitsFn, critic_fn: Optional[CriticFn], mask_id: int,
                  choose: Optional[ChooseFn] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One MaskGIT step: sample the masked ``positions`` (b k) of ``ids`` (b n), then re-mask.

    Returns (ids with the samples written, ids re-masked for the next step, next positions b k').
    No host sync: every size comes from ``plan``. ``choose``: a compiled ``choose_tokens`` (the default).
    """
    logits = logits_fn(ids, positions)  # b k V
    sampled, log_p = (choose or choose_tokens)(logits, plan.temperature, position_keys(seed, step, _STREAM_TOKENS, positions))
    filled = ids.scatter(1, positions, sampled)
    if plan.next_masked == 0:
        return filled, filled, positions[:, :0]
    if critic_fn is not None:  # any token may be re-masked
        everywhere = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        noise = uniform_noise(position_keys(seed, step, _STREAM_SCORES, everywhere)) - 0.5
        scores = critic_fn(filled).float() + plan.critic_noise * noise
        next_positions = scores.topk(plan.next_masked, dim=-1).indices
    else:  # only this step's samples may be re-masked: rank them by (noisy) uncertainty
        scores = -log_p
        if plan.choice_temperature > 0:
            scores = scores - plan.choice_temperature * gumbel_from_keys(
                position_keys(seed, step, _STREAM_SCORES, positions))
        next_positions = positions.gather(1, scores.topk(plan.next_masked, dim=-1).indices)
    return filled, filled.scatter(1, next_positions, mask_id), next_positions


def sample_tokens(
    logits_fn: LogitsFn,
    *,
    batch: int,
    num_tokens: int,
    mask_id: int,
    config: "SamplerConfig",
    device: torch.device | str,
    generator: Optional[torch.Generator] = None,
    seed: Optional[torch.Tensor] = None,
    critic_fn: Optional[CriticFn] = None,
    callback: Optional[Callable[[SamplerStep], None]] = None,
) -> torch.Tensor:
    """Run the MaskGIT loop and return ids (batch, num_tokens).

    ``seed`` (an int64 tensor from ``draw_seed``) keys all noise; without it one is drawn from
    ``generator``. ``critic_fn`` is used when ``config.remask`` asks for the critic.
    """
    use_critic = config.remask == "critic" or (config.remask == "auto" and critic_fn is not None)
    if use_critic and critic_fn is None:
        raise ConfigError("remask='critic' needs a model with a token critic; use remask='confidence'")
    device = torch.device(device)
    if seed is None:
        seed = draw_seed(generator, device)
    ids = torch.full((batch, num_tokens), mask_id, dtype=torch.long, device=device)
    positions = torch.arange(num_tokens, device=device).expand(batch, -1)
    for step, plan in enumerate(plan_steps(num_tokens, config)):
        filled, ids, next_positions = sampling_step(ids, positions, plan, step, seed, logits_fn,
                                                    critic_fn if use_critic else None, mask_id)
        if callback is not None:
            callback(SamplerStep(step, config.steps, filled, positions))
        positions = next_positions
    return ids

"""Guided sampling of a Phenaki model: prepare once, then run the fixed-shape MaskGIT loop.

    sample_ids(model, text, num_frames=..., prime_ids=..., negative=...) -> ids (b t y x)
    sample_images(model, text) -> frames (b c H W)

``GuidedModel`` holds everything that stays fixed during one sample, computed once before the
loop: the prime's ids, the text rows of classifier-free guidance ([cond; uncond] as one batch),
their cross-attention keys/values, and the position bias. Its callbacks are what
``sampling.sample_tokens`` calls at every step:

- ``logits(ids, positions)``: one batched forward of both guidance rows, the guidance combined in
  hidden space (the logits head is affine, so ``head(u + s (c - u)) == head(u) + s (head(c) - head(u))``)
  and the head applied at the masked positions only: b x k rows, not 2b x n.
- ``critic(ids)``: the critic's scores, guided the same way (in score space: it is one number).

The model modules only provide forward passes; the loop, its noise and its schedule live in
``sampling``. On CUDA, ``compile=True`` replays the whole sample as CUDA graphs (``cuda_graphs``).
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import torch

from .errors import ConfigError, InputError
from .kernels import wants_flex
from .maskgit import SelfCritic
from .sampling import SamplerConfig, SamplerStep, draw_seed, sample_tokens
from .text_condition import TextCondition

logger = logging.getLogger(__name__)


class GuidedModel:
    """A Phenaki model bound to one sample's text, prime and token grid (see the module doc)."""

    def __init__(self, model, text: Optional[TextCondition], negative: Optional[TextCondition],
                 prime_ids: Optional[torch.Tensor], token_shape: tuple[int, int, int], cond_scale: float,
                 attention: str = "auto"):
        maskgit = model.maskgit
        device, dtype = model.device, maskgit.to_logits.weight.dtype
        self.maskgit, self.critic_net = maskgit, model.critic
        self.token_shape = token_shape
        self.cond_scale = cond_scale
        self.guided = text is not None and cond_scale != 1.0
        rows = 2 if self.guided else 1
        self.prime = None if prime_ids is None else prime_ids.flatten(1).to(device).long().repeat(rows, 1)
        self.n_prime = 0 if prime_ids is None else prime_ids[0].numel()

        self.text_embeds = self.text_mask = None
        if text is not None:
            if self.guided:  # rows [cond; uncond] run as one batch
                text = TextCondition.cat([text, negative if negative is not None else text.dropped()])
            text = text.to(device)
            self.text_embeds, self.text_mask = text.embeds.to(dtype), text.mask
        # fixed for the whole sample: computed once, in the weights' dtype
        self.bias = maskgit.relative_bias(token_shape, flex=wants_flex(attention, device)).to(dtype)
        if not self.bias.flex:
            self.bias.dense()  # h n n, built once for every step and layer
        self.text_kvs = maskgit.text_kvs(self.text_embeds) if self.text_embeds is not None else None
        self.critic_kvs = None
        if self.critic_net is not None and self.text_embeds is not None:
            self.critic_kvs = (self.text_kvs if isinstance(self.critic_net, SelfCritic)
                               else self.critic_net.text_kvs(self.text_embeds))

    def _rows(self, ids: torch.Tensor) -> torch.Tensor:
        """b n new ids -> rows (n_prime + n): guidance rows stacked, the prime prepended."""
        ids = torch.cat((ids, ids)) if self.guided else ids
        return ids if self.prime is None else torch.cat((self.prime, ids), dim=1)

    def _combine(self, out: torch.Tensor) -> torch.Tensor:
        """rows ... -> b ...: cond + guidance away from uncond, in float32."""
        if not self.guided:
            return out.float()
        cond, null = out.float().chunk(2)
        return null + (cond - null) * self.cond_scale

    def logits(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Guided logits (b k V) at ``positions`` (b k) of the new tokens ``ids`` (b n)."""
        hidden = self.maskgit(self._rows(ids), text_mask=self.text_mask, token_shape=self.token_shape,
                              attn_bias=self.bias, text_kvs=self.text_kvs, text_embeds=self.text_embeds,
                              return_embeds=True)  # rows (n_prime + n) d
        rows = hidden.shape[0]
        index = (positions + self.n_prime).repeat(rows // positions.shape[0], 1)  # rows k
        picked = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))  # rows k d
        return self.maskgit.to_logits(self._combine(picked).to(hidden.dtype))  # b k V

    def critic(self, ids: torch.Tensor) -> torch.Tensor:
        """Guided critic scores (b n) of the new tokens (high = looks sampled)."""
        extra = {"attn_bias": self.bias} if isinstance(self.critic_net, SelfCritic) else {}
        scores = self.critic_net(self._rows(ids), text_embeds=self.text_embeds, text_mask=self.text_mask,
                                 token_shape=self.token_shape, text_kvs=self.critic_kvs, **extra)
        return self._combine(scores[:, self.n_prime:])


def plan_grid(model, num_frames: int, prime_ids: Optional[torch.Tensor], batch: int) -> tuple[int, int]:
    """Check the frame count and prime; return (prime token-frames, new token-frames)."""
    cfg = model.config.cvivit
    pt = cfg.temporal_patch_size
    prime_t = 0
    if prime_ids is not None:
        model.cvivit.check_ids(prime_ids)
        if prime_ids.shape[0] != batch:
            raise InputError(f"prime ids have batch {prime_ids.shape[0]} but the text has {batch} rows")
        prime_t = prime_ids.shape[1]
        if not (isinstance(num_frames, int) and num_frames >= pt and num_frames % pt == 0):
            raise InputError(f"after a prime, num_frames counts new frames and must be a positive multiple "
                             f"of {pt}; got {num_frames!r}")
        new_t = num_frames // pt
    else:
        cfg.check_num_frames(num_frames)
        new_t = cfg.token_frames(num_frames)
    total = (prime_t + new_t) * cfg.tokens_per_frame
    if total > model.maskgit.max_seq_len:
        raise InputError(f"{cfg.frames_for_token_frames(prime_t + new_t)} frames (prime included) need "
                         f"{total} tokens but this model attends over at most {model.maskgit.max_seq_len} "
                         f"({model.config.max_frames} frames); use fewer frames or a shorter prime")
    return prime_t, new_t


@torch.no_grad()
def sample_ids(
    model,
    text: Optional[TextCondition],
    *,
    num_frames: int,
    prime_ids: Optional[torch.Tensor] = None,  # b tp y x, kept fixed
    negative: Optional[TextCondition] = None,  # replaces the empty text of the CFG branch
    sampler: SamplerConfig = SamplerConfig(),
    generator: Optional[torch.Generator] = None,
    batch_size: Optional[int] = None,
    callback: Optional[Callable[[SamplerStep], None]] = None,
    compile: bool = False,
    attention: str = "auto",
) -> torch.Tensor:
    """Generate token ids (b, t, y, x) for ``num_frames`` new frames; the prime's ids come first.

    Without a prime, ``num_frames`` is ``1 + k*pt``; after a prime it is a multiple of ``pt`` (the
    prime already holds the first frame). With ``negative``, guidance pushes away from that text
    instead of from no text. All checks run here, before the loop. ``compile=True`` replays the
    steps as CUDA graphs on CUDA (``cuda_graphs``); elsewhere it runs eagerly. ``attention``:
    ``auto`` (FlexAttention on CUDA, SDPA elsewhere), ``flex`` or ``sdpa`` (``kernels``).
    """
    batch = text.batch if text is not None else prime_ids.shape[0] if prime_ids is not None else batch_size or 1
    text = model.check_text(text, batch)
    if negative is not None:
        negative = model.check_text(negative, batch)
    prime_t, new_t = plan_grid(model, num_frames, prime_ids, batch)
    grid = model.config.cvivit.grid_size
    token_shape = (prime_t + new_t, grid, grid)
    n_new = new_t * grid * grid
    use_critic = sampler.remask == "critic" or (sampler.remask == "auto" and model.critic is not None)
    if use_critic and model.critic is None:
        raise ConfigError("remask='critic' needs a model with a token critic; use remask='confidence'")

    was_training = model.training
    model.eval()
    try:
        seed = draw_seed(generator, model.device)
        if callback is not None and prime_ids is not None:
            user_callback = callback

            def callback(step: SamplerStep) -> None:  # previews decode the prime in front of the new tokens
                step.prime = prime_ids
                user_callback(step)
        new_ids = None
        if compile and model.device.type == "cuda":
            from .cuda_graphs import graphed_sample
            new_ids = graphed_sample(model, text, negative, prime_ids, token_shape, sampler, seed, callback, batch,
                                     use_critic, attention)
        elif compile:
            logger.info("compile=True replays CUDA graphs on CUDA only; sampling eagerly on %s", model.device.type)
        if new_ids is None:
            guided = GuidedModel(model, text, negative, prime_ids, token_shape, sampler.cond_scale, attention)
            new_ids = sample_tokens(guided.logits, batch=batch, num_tokens=n_new, mask_id=model.maskgit.mask_id,
                                    config=sampler, device=model.device, seed=seed,
                                    critic_fn=guided.critic if use_critic else None, callback=callback)
    finally:
        model.train(was_training)
    new_ids = new_ids.view(batch, new_t, grid, grid)
    return new_ids if prime_ids is None else torch.cat((prime_ids.to(new_ids), new_ids), dim=1)


@torch.no_grad()
def sample_images(model, text: Optional[TextCondition], **kwargs) -> torch.Tensor:
    """Single frames: (b, c, H, W) in [0, 1] (``sample_ids`` with one frame, decoded)."""
    ids = sample_ids(model, text, num_frames=1, **kwargs)
    return model.cvivit.decode_from_ids(ids)[:, :, 0]

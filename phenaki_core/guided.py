"""Guided sampling of a Phenaki model: check, prepare once, then run the fixed-shape MaskGIT loop.

    sample_ids(model, text, num_frames=..., prime_ids=..., negative=...) -> ids (b t y x)
    sample_images(model, text) -> frames (b c H W)

All checks run here, before the loop. The sample's fixed parts (guidance rows, text keys/values,
position bias) are prepared once by ``guided_model.GuidedModel``, whose callbacks the loop in
``sampling`` calls at every step. On CUDA, ``compile=True`` replays the whole sample as CUDA
graphs (``cuda_graphs``: it builds on ``guided_model`` too and never imports this module).
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import torch

from .errors import ConfigError, InputError
from .guided_model import GuidedModel
from .sampling import SamplerConfig, SamplerStep, draw_seed, sample_tokens
from .text_condition import TextCondition

logger = logging.getLogger(__name__)


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
    steps as CUDA graphs on CUDA (``cuda_graphs``); elsewhere it runs eagerly. ``attention`` picks
    how the position bias is applied (``kernels.wants_flex``): ``sdpa`` builds the dense (heads, n, n)
    bias once and runs scaled_dot_product_attention; ``flex`` runs FlexAttention reading the small
    per-offset table (compiled on CUDA; an eager, slow reference elsewhere); ``auto`` is ``sdpa`` on
    every device until FlexAttention is measured faster on a GPU (``kernels.AUTO_FLEX_ON_CUDA``,
    False today), then ``flex`` on CUDA with Triton.
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

"""The Phenaki model bundle: tokenizer + MaskGit + critic, its training forward and token sampling.

    Phenaki.forward(video_ids, text_embeds, text_mask)   -> PhenakiLoss   (stage-2 training)
    Phenaki.sample(text, num_frames, prime_ids=...)     -> ids (b t y x) (guided MaskGIT decoding)

Text comes in already encoded (``TextCondition``); the text encoder lives in ``text.py`` and the
user-facing pipeline that ties both together in ``pipeline.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import PhenakiConfig
from .cvivit import CViViT
from .errors import InputError
from .maskgit import MaskGit, SelfCritic, TokenCritic
from .sampling import SamplerConfig, SamplerStep, gumbel_sample, maybe_compile, sample_tokens


@dataclass
class TextCondition:
    """Encoded prompts: per-token embeddings and a padding mask (True = real token)."""

    embeds: torch.Tensor  # b l d
    mask: torch.Tensor  # b l bool

    def __post_init__(self) -> None:
        if self.embeds.ndim != 3 or self.mask.shape != self.embeds.shape[:2]:
            raise InputError(f"text embeds must be (batch, len, dim) with a (batch, len) mask; got "
                             f"{tuple(self.embeds.shape)} and {tuple(self.mask.shape)}")

    @property
    def batch(self) -> int:
        return self.embeds.shape[0]

    def to(self, device: torch.device | str, dtype: Optional[torch.dtype] = None) -> "TextCondition":
        return TextCondition(self.embeds.to(device=device, dtype=dtype or self.embeds.dtype),
                             self.mask.to(device))

    def repeat(self, times: int) -> "TextCondition":
        return TextCondition(self.embeds.repeat_interleave(times, 0), self.mask.repeat_interleave(times, 0))

    def dropped(self) -> "TextCondition":
        """The same rows with every text token masked: the unconditional branch of CFG."""
        return TextCondition(self.embeds, torch.zeros_like(self.mask))

    def pad_to(self, length: int) -> "TextCondition":
        """Right-pad to ``length`` text tokens (padding is masked out)."""
        extra = length - self.embeds.shape[1]
        if extra <= 0:
            return self
        return TextCondition(F.pad(self.embeds, (0, 0, 0, extra)), F.pad(self.mask, (0, extra), value=False))

    @staticmethod
    def cat(conditions: list["TextCondition"]) -> "TextCondition":
        """Stack rows of several conditions, padding them to a common length."""
        length = max(c.embeds.shape[1] for c in conditions)
        padded = [c.pad_to(length) for c in conditions]
        return TextCondition(torch.cat([c.embeds for c in padded]), torch.cat([c.mask for c in padded]))


@dataclass
class PhenakiLoss:
    loss: torch.Tensor  # what to backpropagate
    generator_loss: Optional[torch.Tensor]
    critic_loss: Optional[torch.Tensor]
    token_mask: torch.Tensor  # b n bool, positions replaced by the mask token
    cond_dropped: Optional[torch.Tensor]  # b bool, rows whose text was dropped (CFG training)
    critic_labels: Optional[torch.Tensor]  # b n float, 1 where a sampled token replaced the truth


def cosine_mask_subset(valid: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Mask a cosine-scheduled fraction of the *valid* tokens of each row.

    valid (b n) bool -> mask (b n) bool with round(cos(pi/2 * r) * valid_count), r ~ U[0, 1),
    at least one token per row, never on a padded position.
    """
    b, n = valid.shape
    r = torch.rand(b, generator=generator, device=valid.device)
    counts = valid.sum(-1)
    num = (torch.cos(r * math.pi / 2) * counts).round().clamp(min=1).long()
    noise = torch.rand(b, n, generator=generator, device=valid.device).masked_fill(~valid, 2.0)
    rank = noise.argsort(-1).argsort(-1)  # rank of each position among the row's random order
    return (rank < num[:, None]) & valid


class Phenaki(nn.Module):
    def __init__(self, config: PhenakiConfig):
        super().__init__()
        self.config = config
        self.cvivit = CViViT(config.cvivit)
        self.maskgit = MaskGit(config.maskgit)
        kind = config.critic.kind
        text_dim = None if config.maskgit.unconditional else config.maskgit.text_dim
        if kind == "token":
            self.critic: Optional[nn.Module] = TokenCritic(config.critic, num_tokens=config.maskgit.num_tokens,
                                                           max_seq_len=config.maskgit.max_seq_len, text_dim=text_dim)
        elif kind == "self":
            self.critic = SelfCritic(self.maskgit)
        else:
            self.critic = None

    # --- parameter groups -------------------------------------------------------------------------
    def generator_parameters(self) -> list[nn.Parameter]:
        return list(self.maskgit.parameters())

    def critic_parameters(self) -> list[nn.Parameter]:
        return [] if self.critic is None else list(self.critic.parameters())

    def transformer_parameters(self) -> list[nn.Parameter]:
        """Everything stage 2 trains: MaskGit and the critic (the tokenizer stays frozen)."""
        return self.generator_parameters() + self.critic_parameters()

    @property
    def device(self) -> torch.device:
        return self.maskgit.to_logits.weight.device

    # --- helpers ----------------------------------------------------------------------------------
    def _check_text(self, text: Optional[TextCondition], batch: int) -> Optional[TextCondition]:
        if self.config.maskgit.unconditional:
            return None
        if text is None:
            raise InputError("this model is text-conditioned: pass a TextCondition (encode your prompts first)")
        if text.embeds.shape[-1] != self.config.maskgit.text_dim:
            raise InputError(f"text embeddings have dimension {text.embeds.shape[-1]} but the model expects "
                             f"{self.config.maskgit.text_dim}; use the text encoder the checkpoint was trained with")
        if text.batch != batch:
            raise InputError(f"got {text.batch} text rows for a batch of {batch} videos")
        return text

    def video_token_mask(self, video_frame_mask: torch.Tensor, token_shape: tuple[int, int, int]) -> torch.Tensor:
        """Frame mask (b f) -> token mask (b n): a token-frame is valid if any of its frames is."""
        cfg = self.config.cvivit
        b, f = video_frame_mask.shape
        t, y, x = token_shape
        if cfg.frames_for_token_frames(t) != f:
            raise InputError(f"video_frame_mask has {f} frames but the ids cover {cfg.frames_for_token_frames(t)}")
        rest = video_frame_mask[:, 1:].reshape(b, t - 1, cfg.temporal_patch_size).any(-1)
        frames = torch.cat((video_frame_mask[:, :1], rest), dim=1)  # b t
        return frames[:, :, None].expand(b, t, y * x).reshape(b, t * y * x)

    # --- training ---------------------------------------------------------------------------------
    def forward(
        self,
        video_ids: Optional[torch.Tensor] = None,  # b t y x, precomputed by the frozen tokenizer
        *,
        videos: Optional[torch.Tensor] = None,  # b c f H W in [0, 1], tokenized on the fly
        text: Optional[TextCondition] = None,
        video_frame_mask: Optional[torch.Tensor] = None,  # b f bool, False = padded frame
        cond_drop_prob: Optional[float] = None,
        only_train_generator: bool = False,
        only_train_critic: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> PhenakiLoss:
        """Masked-token cross-entropy (+ critic loss), with classifier-free-guidance text dropout."""
        if only_train_generator and only_train_critic:
            raise InputError("only_train_generator and only_train_critic are mutually exclusive")
        if (video_ids is None) == (videos is None):
            raise InputError("pass exactly one of video_ids (precomputed tokens) or videos")
        if videos is not None:
            was_training = self.cvivit.training
            self.cvivit.eval()
            video_ids = self.cvivit.encode_to_ids(videos)
            self.cvivit.train(was_training)
        if video_ids.ndim != 4:
            raise InputError(f"video_ids must be (batch, token_frames, height, width), got {tuple(video_ids.shape)}")
        b, token_shape = video_ids.shape[0], tuple(video_ids.shape[1:])
        ids = video_ids.flatten(1).long()  # b n
        text = self._check_text(text, b)
        loss_cfg = self.config.loss

        # classifier-free guidance: drop the whole text of some rows (only null key/values remain)
        cond_dropped = None
        text_mask = None
        if text is not None:
            p = loss_cfg.cond_drop_prob if cond_drop_prob is None else cond_drop_prob
            cond_dropped = torch.rand(b, generator=generator, device=ids.device) < p
            text_mask = text.mask & ~cond_dropped[:, None]

        valid = (torch.ones_like(ids, dtype=torch.bool) if video_frame_mask is None
                 else self.video_token_mask(video_frame_mask.bool(), token_shape))
        token_mask = cosine_mask_subset(valid, generator)
        masked_ids = ids.masked_fill(token_mask, self.maskgit.mask_id)

        cond = dict(text_embeds=None if text is None else text.embeds, text_mask=text_mask, video_mask=valid,
                    token_shape=token_shape)
        with torch.no_grad() if only_train_critic else torch.enable_grad():
            logits = self.maskgit(masked_ids, **cond)  # b n V
        generator_loss = None
        if not only_train_critic:
            generator_loss = F.cross_entropy(logits[token_mask].float(), ids[token_mask])

        critic_loss = critic_labels = None
        if self.critic is not None and not only_train_generator:
            sampled = gumbel_sample(logits.detach(), loss_cfg.critic_train_sample_temperature, generator)
            critic_input = torch.where(token_mask, sampled, ids)
            # a token counts as replaced only where a sample was written AND it differs from the truth
            critic_labels = (token_mask & (critic_input != ids)).float()
            critic_logits = self.critic(critic_input, **cond)
            critic_loss = F.binary_cross_entropy_with_logits(critic_logits[valid].float(), critic_labels[valid])

        if only_train_critic:
            if critic_loss is None:
                raise InputError("only_train_critic needs a model with a critic (critic.kind 'token' or 'self')")
            loss = critic_loss
        elif critic_loss is None:
            loss = generator_loss
        else:
            loss = generator_loss + loss_cfg.critic_loss_weight * critic_loss
        return PhenakiLoss(loss, generator_loss, critic_loss, token_mask, cond_dropped, critic_labels)

    # --- sampling ---------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
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
    ) -> torch.Tensor:
        """Generate token ids (b, t, y, x) for ``num_frames`` new frames (prime excluded).

        Without a prime, ``num_frames`` is ``1 + k*pt``; after a prime it is a multiple of ``pt``
        (the prime already holds the first frame). The returned ids include the prime's ids.
        With ``negative``, guidance pushes away from that text instead of from no text.
        ``compile=True`` runs the fixed-shape model passes through ``torch.compile`` (CUDA graphs)
        on CUDA, with an eager fallback; elsewhere it is ignored (see ``sampling.maybe_compile``).
        """
        cfg = self.config.cvivit
        pt = cfg.temporal_patch_size
        if text is not None:
            batch = text.batch
        elif prime_ids is not None:
            batch = prime_ids.shape[0]
        else:
            batch = batch_size or 1
        text = self._check_text(text, batch)
        if negative is not None:
            negative = self._check_text(negative, batch)

        prime_t = 0
        if prime_ids is not None:
            self.cvivit.check_ids(prime_ids)
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
        token_shape = (prime_t + new_t, cfg.grid_size, cfg.grid_size)
        n_prime, n_new = prime_t * cfg.tokens_per_frame, new_t * cfg.tokens_per_frame
        if n_prime + n_new > self.maskgit.max_seq_len:
            max_frames = self.config.max_frames
            raise InputError(f"{cfg.frames_for_token_frames(token_shape[0])} frames (prime included) need "
                             f"{n_prime + n_new} tokens but this model attends over at most "
                             f"{self.maskgit.max_seq_len} ({max_frames} frames); use fewer frames or a shorter prime")

        was_training = self.training
        self.eval()
        try:
            logits_fn, critic_fn = self._guided_fns(text, negative, prime_ids, token_shape, sampler.cond_scale)
            logits_fn = maybe_compile(logits_fn, self.device, compile)
            if critic_fn is not None:
                critic_fn = maybe_compile(critic_fn, self.device, compile)
            new_ids = sample_tokens(logits_fn, batch=batch, num_tokens=n_new, mask_id=self.maskgit.mask_id,
                                    config=sampler, device=self.device, generator=generator, critic_fn=critic_fn,
                                    callback=callback)
        finally:
            self.train(was_training)
        new_ids = new_ids.view(batch, new_t, cfg.grid_size, cfg.grid_size)
        return new_ids if prime_ids is None else torch.cat((prime_ids.to(new_ids), new_ids), dim=1)

    def _guided_fns(self, text: Optional[TextCondition], negative: Optional[TextCondition],
                    prime_ids: Optional[torch.Tensor], token_shape: tuple[int, int, int], cond_scale: float):
        """Build the logits/critic callbacks: prime prepended, CFG batched into one forward.

        Everything that does not change between steps (position bias, text keys/values, the
        doubled text mask) is computed once here.
        """
        guided = text is not None and cond_scale != 1.0
        prime = None if prime_ids is None else prime_ids.flatten(1).to(self.device).long()
        n_prime = 0 if prime is None else prime.shape[1]
        if prime is not None and guided:
            prime = prime.repeat(2, 1)

        text_embeds = text_mask = None
        if text is not None:
            if guided:  # rows [cond; uncond] run as one batch
                text = TextCondition.cat([text, negative if negative is not None else text.dropped()])
            text = text.to(self.device)
            text_embeds, text_mask = text.embeds, text.mask
            text_embeds = text_embeds.to(self.maskgit.to_logits.weight.dtype)
        # computed once, contiguous and in the weights' dtype, so no layer converts or copies it
        bias = self.maskgit.position_bias(token_shape).to(self.maskgit.to_logits.weight.dtype).contiguous()
        text_kvs = self.maskgit.text_kvs(text_embeds) if text_embeds is not None else None

        def full_ids(ids: torch.Tensor) -> torch.Tensor:  # b n -> rows (n_prime + n)
            ids = torch.cat((ids, ids)) if guided else ids
            return ids if prime is None else torch.cat((prime, ids), dim=1)

        def combine(out: torch.Tensor) -> torch.Tensor:  # rows (n_prime + n) ... -> b n ...
            out = out[:, n_prime:]
            if not guided:
                return out
            cond, null = out.float().chunk(2)
            return null + (cond - null) * cond_scale

        def logits_fn(ids: torch.Tensor) -> torch.Tensor:
            return combine(self.maskgit(full_ids(ids), text_mask=text_mask, token_shape=token_shape,
                                        attn_bias=bias, text_kvs=text_kvs, text_embeds=text_embeds,
                                        paired_halves=guided, null_text_half=guided and negative is None))

        critic_fn = None
        if self.critic is not None:
            critic_kvs = text_kvs if isinstance(self.critic, SelfCritic) else self.critic.text_kvs(text_embeds)

            def critic_fn(ids: torch.Tensor) -> torch.Tensor:
                extra = {"attn_bias": bias} if isinstance(self.critic, SelfCritic) else {}
                return combine(self.critic(full_ids(ids), text_embeds=text_embeds, text_mask=text_mask,
                                           token_shape=token_shape, text_kvs=critic_kvs, **extra))
        return logits_fn, critic_fn

    @torch.no_grad()
    def sample_images(self, text: Optional[TextCondition], **kwargs) -> torch.Tensor:
        """Single frames: (b, c, H, W) in [0, 1]."""
        ids = self.sample(text, num_frames=1, **kwargs)
        return self.cvivit.decode_from_ids(ids)[:, :, 0]

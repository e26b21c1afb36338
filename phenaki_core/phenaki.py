"""The Phenaki model bundle: tokenizer + MaskGit + critic, and its training forward.

    Phenaki.forward(video_ids, text=TextCondition)   -> PhenakiLoss   (stage-2 training)

Text comes in already encoded (``TextCondition``); the text encoder lives in ``text.py``.
Sampling is not a method of the model: ``guided.sample_ids(model, text, num_frames=...)`` runs the
MaskGIT loop over the model's forward passes, and ``pipeline.py`` ties text, sampling and video
together (docs/architecture.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import PhenakiConfig
from .cvivit import CViViT
from .errors import InputError
from .maskgit import MaskGit, SelfCritic, TokenCritic
from .text_condition import TextCondition


@dataclass
class PhenakiLoss:
    loss: torch.Tensor  # what to backpropagate
    token_loss: torch.Tensor  # MaskGit's masked-token cross-entropy
    critic_loss: Optional[torch.Tensor]
    token_mask: torch.Tensor  # b n bool, positions replaced by the mask token
    cond_dropped: Optional[torch.Tensor]  # b bool, rows whose text was dropped (CFG training)
    critic_labels: Optional[torch.Tensor]  # b n float, 1 where a sampled token replaced the truth


def gumbel_noise(shape: torch.Size, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device)
    neg_log_u = -torch.log(u.clamp_min(1e-20))  # in (0, 46]
    return -torch.log(neg_log_u.clamp_min(1e-20))


def gumbel_sample(logits: torch.Tensor, temperature: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Sample ids from logits (..., V) with a torch.Generator; temperature 0 is argmax. Training draws
    the critic's inputs with it; the sampler has its own counter-based noise (``sampling``)."""
    if temperature <= 1e-10:
        return logits.argmax(dim=-1)
    noise = gumbel_noise(logits.shape, generator, logits.device)
    return (logits.float() / temperature + noise).argmax(dim=-1)


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
    def transformer_parameters(self) -> list[nn.Parameter]:
        """Everything stage 2 trains: MaskGit and the critic (the tokenizer stays frozen)."""
        critic = [] if self.critic is None else list(self.critic.parameters())
        return list(self.maskgit.parameters()) + critic

    @property
    def device(self) -> torch.device:
        return self.maskgit.to_logits.weight.device

    # --- helpers ----------------------------------------------------------------------------------
    def check_text(self, text: Optional[TextCondition], batch: int) -> Optional[TextCondition]:
        """The model's text condition for ``batch`` rows (None for an unconditional model)."""
        config = self.config.maskgit
        if config.unconditional:
            return None
        if text is None:
            raise InputError("this model is text-conditioned: pass a TextCondition (encode your prompts first)")
        if text.embeds.shape[-1] != config.text_dim:
            raise InputError(f"text embeddings have dimension {text.embeds.shape[-1]} but the model expects "
                             f"{config.text_dim}; use the text encoder the checkpoint was trained with")
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
        frames = self.cvivit.token_frame_mask(video_frame_mask)  # b t
        return frames[:, :, None].expand(b, t, y * x).reshape(b, t * y * x)

    # --- training ---------------------------------------------------------------------------------
    def forward(
        self,
        video_ids: torch.Tensor,  # b t y x, from the frozen tokenizer (encode_to_ids)
        *,
        text: Optional[TextCondition] = None,
        video_frame_mask: Optional[torch.Tensor] = None,  # b f bool, False = padded frame
        cond_drop_prob: Optional[float] = None,
        generator: Optional[torch.Generator] = None,
    ) -> PhenakiLoss:
        """Masked-token cross-entropy (+ critic loss), with classifier-free-guidance text dropout."""
        if not isinstance(video_ids, torch.Tensor) or video_ids.ndim != 4:
            shape = tuple(video_ids.shape) if isinstance(video_ids, torch.Tensor) else type(video_ids).__name__
            raise InputError(f"video_ids must be (batch, token_frames, height, width), got {shape}")
        b, token_shape = video_ids.shape[0], tuple(video_ids.shape[1:])
        ids = video_ids.flatten(1).long()  # b n
        text = self.check_text(text, b)
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

        # no key mask when no frame is padded: attention then needs no (b, h, n, n) mask at all
        cond = dict(text_embeds=None if text is None else text.embeds, text_mask=text_mask,
                    video_mask=None if video_frame_mask is None else valid, token_shape=token_shape)
        hidden = self.maskgit(masked_ids, return_embeds=True, **cond)  # b n d
        logits = self.maskgit.to_logits(hidden[token_mask])  # m V: the head at masked tokens only
        token_loss = F.cross_entropy(logits.float(), ids[token_mask])

        critic_loss = critic_labels = None
        if self.critic is not None:
            sampled = gumbel_sample(logits.detach(), loss_cfg.critic_train_sample_temperature, generator)  # m
            critic_input = ids.masked_scatter(token_mask, sampled)
            # a token counts as replaced only where a sample was written AND it differs from the truth
            critic_labels = (token_mask & (critic_input != ids)).float()
            critic_logits = self.critic(critic_input, **cond)
            critic_loss = F.binary_cross_entropy_with_logits(critic_logits[valid].float(), critic_labels[valid])
        loss = token_loss if critic_loss is None else token_loss + loss_cfg.critic_loss_weight * critic_loss
        return PhenakiLoss(loss, token_loss, critic_loss, token_mask, cond_dropped, critic_labels)

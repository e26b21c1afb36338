"""MaskGit (ids -> logits) and the two token critics (ids -> "was this token sampled?" logits).

These modules are pure functions of their inputs: no sampling loop, no dropout of the text
condition, no RNG. The training forward (``phenaki.Phenaki``) decides which text rows to drop
and the sampler (``sampling``) decides which tokens to mask.

Token ids come as (b, t, y, x) or flattened (b, n) with ``token_shape=(t, y, x)``; the mask id
is ``num_tokens`` (one past the last codebook id).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .config import CriticConfig, MaskGitConfig
from .errors import InputError
from .kernels import RelativeBias
from .layers import LAYOUT_VIDEO, ContinuousPositionBias, Transformer

KV = list[tuple[torch.Tensor, torch.Tensor]]


def flatten_ids(ids: torch.Tensor, token_shape: Optional[tuple[int, int, int]]) -> tuple[torch.Tensor, tuple]:
    """(b t y x) or (b n) ids -> ((b n) ids, (t, y, x))."""
    if not isinstance(ids, torch.Tensor) or ids.ndim not in (2, 4):
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise InputError(f"token ids must have shape (batch, frames, height, width) or (batch, seq); got {shape}")
    if ids.ndim == 4:
        token_shape = tuple(ids.shape[1:])
        ids = ids.flatten(1)
    if token_shape is None:
        raise InputError("flattened (batch, seq) ids need token_shape=(token_frames, height, width)")
    t, y, x = token_shape
    if t * y * x != ids.shape[1]:
        raise InputError(f"token_shape {tuple(token_shape)} holds {t * y * x} tokens but the ids have {ids.shape[1]}")
    return ids, tuple(token_shape)


class _TokenTransformer(nn.Module):
    """Token + absolute position embeddings feeding a Transformer over the (t y x) sequence."""

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        if n > self.max_seq_len:
            raise InputError(f"the token sequence has {n} tokens but this model's max_seq_len is {self.max_seq_len}; "
                             f"use fewer frames (prime frames count too)")
        return self.token_emb(ids) + self.pos_emb(torch.arange(n, device=ids.device))

    def _check_text(self, text_embeds: Optional[torch.Tensor], dim_context: Optional[int]) -> None:
        if text_embeds is None or dim_context is None:
            return
        if text_embeds.ndim != 3 or text_embeds.shape[-1] != dim_context:
            raise InputError(f"text embeddings must have shape (batch, text_len, {dim_context}); got "
                             f"{tuple(text_embeds.shape)}. Was the checkpoint trained with another text encoder?")


class MaskGit(_TokenTransformer):
    def __init__(self, config: MaskGitConfig):
        super().__init__()
        self.config = config
        self.dim = config.dim
        self.num_tokens = config.num_tokens
        self.mask_id = config.mask_id
        self.max_seq_len = config.max_seq_len
        self.unconditional = config.unconditional
        self.gradient_shrink_alpha = config.gradient_shrink_alpha

        self.token_emb = nn.Embedding(config.num_tokens + 1, config.dim)  # last id is the mask
        self.pos_emb = nn.Embedding(config.max_seq_len, config.dim)
        self.continuous_pos_bias = ContinuousPositionBias(dim=config.dim_head, heads=config.heads, num_dims=3)
        self.transformer = Transformer(
            config.dim, depth=config.depth, heads=config.heads, dim_head=config.dim_head, ff_mult=config.ff_mult,
            dim_context=None if config.unconditional else config.text_dim, peg=True, peg_causal=False,
            num_null_kv=config.num_null_kv, attn_dropout=config.attn_dropout, ff_dropout=config.ff_dropout,
            layout=LAYOUT_VIDEO)
        self.to_logits = nn.Linear(config.dim, config.num_tokens)

    def position_bias(self, token_shape: tuple[int, int, int]) -> torch.Tensor:
        """(heads, n, n) relative position bias for a token grid."""
        return self.continuous_pos_bias(*token_shape, device=self.pos_emb.weight.device)

    def relative_bias(self, token_shape: tuple[int, int, int], flex: bool = False) -> RelativeBias:
        """The same bias as its per-offset table; cache it across sampling steps."""
        return self.continuous_pos_bias.relative(*token_shape, device=self.pos_emb.weight.device, flex=flex)

    def text_kvs(self, text_embeds: torch.Tensor) -> Optional[KV]:
        """Per-layer cross-attention keys/values of the text; cache them across sampling steps."""
        if self.unconditional:
            return None
        self._check_text(text_embeds, self.config.text_dim)
        return self.transformer.context_kvs(text_embeds)

    def forward(
        self,
        ids: torch.Tensor,  # b t y x, or b n with token_shape
        *,
        text_embeds: Optional[torch.Tensor] = None,  # b l dt
        text_mask: Optional[torch.Tensor] = None,  # b l bool, False = padding or dropped
        video_mask: Optional[torch.Tensor] = None,  # b n bool, False = padded token
        token_shape: Optional[tuple[int, int, int]] = None,
        attn_bias: Optional[torch.Tensor | RelativeBias] = None,  # from relative_bias(): not recomputed
        text_kvs: Optional[KV] = None,  # from text_kvs(), to skip recomputing them
        return_embeds: bool = False,
    ) -> torch.Tensor:
        """Returns logits (b, n, num_tokens), or the final embeddings (b, n, dim) with return_embeds."""
        ids, token_shape = flatten_ids(ids, token_shape)
        if not self.unconditional and text_embeds is None and text_kvs is None:
            raise InputError("this MaskGit is text-conditioned: pass text_embeds (and text_mask)")
        if text_kvs is None:
            self._check_text(text_embeds, self.config.text_dim)
        x = self._embed(ids)  # b n d
        alpha = self.gradient_shrink_alpha
        x = x * alpha + x.detach() * (1 - alpha)
        if attn_bias is None:
            attn_bias = self.position_bias(token_shape)
        if torch.is_autocast_enabled(x.device.type):  # cast once here, not in every layer
            attn_bias = attn_bias.to(torch.get_autocast_dtype(x.device.type))
        x = self.transformer(
            x, video_shape=(ids.shape[0], *token_shape), attn_bias=attn_bias, self_key_mask=video_mask,
            context=None if self.unconditional else text_embeds, context_mask=text_mask,
            context_kvs=text_kvs)
        return x if return_embeds else self.to_logits(x)


class TokenCritic(_TokenTransformer):
    """A separate small transformer that scores each token: logit > 0 means "looks sampled"."""

    def __init__(self, config: CriticConfig, *, num_tokens: int, max_seq_len: int, text_dim: Optional[int]):
        super().__init__()
        self.config = config
        self.mask_id = num_tokens
        self.max_seq_len = max_seq_len
        self.has_cross_attn = config.has_cross_attn and text_dim is not None
        self.token_emb = nn.Embedding(num_tokens + 1, config.dim)
        self.pos_emb = nn.Embedding(max_seq_len, config.dim)
        self.transformer = Transformer(
            config.dim, depth=config.depth, heads=config.heads, dim_head=config.dim_head, ff_mult=config.ff_mult,
            dim_context=text_dim if self.has_cross_attn else None, peg=True, peg_causal=False, layout=LAYOUT_VIDEO)
        self.to_logits = nn.Linear(config.dim, 1)
        self._text_dim = text_dim

    def text_kvs(self, text_embeds: Optional[torch.Tensor]) -> Optional[KV]:
        if not self.has_cross_attn or text_embeds is None:
            return None
        return self.transformer.context_kvs(text_embeds)

    def forward(self, ids: torch.Tensor, *, text_embeds: Optional[torch.Tensor] = None,
                text_mask: Optional[torch.Tensor] = None, video_mask: Optional[torch.Tensor] = None,
                token_shape: Optional[tuple[int, int, int]] = None, text_kvs: Optional[KV] = None,
                **_: object) -> torch.Tensor:
        """Returns logits (b, n): positive where the token is likely a sample, not real."""
        ids, token_shape = flatten_ids(ids, token_shape)
        context = text_embeds if self.has_cross_attn else None
        if context is not None and text_kvs is None:
            self._check_text(context, self._text_dim)
        x = self.transformer(self._embed(ids), video_shape=(ids.shape[0], *token_shape), self_key_mask=video_mask,
                             context=context, context_mask=text_mask,
                             context_kvs=text_kvs if self.has_cross_attn else None)
        return self.to_logits(x).squeeze(-1)


class SelfCritic(nn.Module):
    """A critic head on MaskGit's own final embeddings (Nijkamp et al.); shares MaskGit's trunk.

    The MaskGit is referenced, not registered as a submodule: its parameters belong to the
    owner of both (``Phenaki``), so they are saved, moved and optimized once.
    """

    def __init__(self, maskgit: MaskGit):
        super().__init__()
        self._trunk = (maskgit,)  # a tuple keeps nn.Module from registering it
        self.to_pred = nn.Linear(maskgit.dim, 1)

    @property
    def maskgit(self) -> MaskGit:
        return self._trunk[0]

    @property
    def has_cross_attn(self) -> bool:
        return not self.maskgit.unconditional

    def text_kvs(self, text_embeds: Optional[torch.Tensor]) -> Optional[KV]:
        return self.maskgit.text_kvs(text_embeds) if text_embeds is not None else None

    def forward(self, ids: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.to_pred(self.maskgit(ids, return_embeds=True, **kwargs)).squeeze(-1)

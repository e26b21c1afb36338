"""Transformer building blocks shared by the C-ViViT, MaskGit and the token critic.

Axis legend used in shape comments:
    b  batch            n / i / j  sequence positions (queries i, keys j)
    h  attention heads  d          feature dimension (per head where noted)
    t  token-frames     y, x       token rows / columns of one token-frame

The math follows the seed architecture (phenaki-pytorch 0.5.0) so its weights convert one to one:
pre-norm attention with L2-normalised queries and keys times learned per-dimension scales and a
fixed scale of 8, learned null key/values for cross-attention, GEGLU feed-forward, a depthwise
3D convolution as position generator (PEG), and an MLP continuous position bias. Two deliberate
differences: the PEG permutes axes properly (the reference's ``reshape`` broke causality), and
attention runs through ``kernels.attention`` (SDPA, or FlexAttention on CUDA).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .kernels import RelativeBias, attention, depthwise_conv3d

# Layouts a Transformer can receive its tokens in. PEG needs to see them as a video.
LAYOUT_VIDEO = "b (t y x) d"  # MaskGit / critic: one sequence per clip
LAYOUT_TIME = "(b y x) t d"  # C-ViViT temporal transformer: one sequence per spatial position
LAYOUT_SPACE = "(b t) (y x) d"  # C-ViViT spatial transformer: one sequence per token-frame

CAUSAL_BLOCK = 16  # causal attention pads its length to a multiple of this (see Attention.forward)


class LayerNorm(nn.Module):
    """Bias-free LayerNorm (a learned gain only)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.gamma)


class FeedForward(nn.Module):
    """Pre-norm GEGLU feed-forward. Inner width is ``int(mult * 2/3 * dim)``."""

    def __init__(self, dim: int, mult: float = 4.0, dropout: float = 0.0):
        super().__init__()
        inner = int(mult * (2 / 3) * dim)
        self.inner = inner
        self.norm = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(dim, inner * 2, bias=False)  # rows [:inner] values, [inner:] gates
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        if torch.is_grad_enabled():
            # dense copies of the two halves: on the CPU, GELU and the product (and their backward)
            # over the strided halves of one output run about 5x slower in bf16. (Two matmuls on the
            # halves of the weight would be as fast, but autocast would keep two bf16 copies of h.)
            value, gate = (half.contiguous() for half in self.proj_in(h).chunk(2, dim=-1))
            return self.proj_out(self.dropout(F.gelu(gate) * value))
        # inference: two matmuls on the halves of proj_in (the same weights) give dense values and
        # gates, so GELU and an in-place product run on contiguous memory with one less buffer
        weight = self.proj_in.weight
        value, gate = F.linear(h, weight[:self.inner]), F.linear(h, weight[self.inner:])
        return self.proj_out(self.dropout(F.gelu(gate).mul_(value)))


def l2norm(t: torch.Tensor) -> torch.Tensor:
    """``F.normalize(t, dim=-1)`` as one product with the inverse norm: the same values up to
    rounding, and a backward that never expands the norm to the full shape (F.normalize divides by
    an expanded norm, and its backward runs two full-size divisions)."""
    return t * t.square().sum(-1, keepdim=True).clamp_min(1e-24).rsqrt()


class PEG(nn.Module):
    """Position generator: a depthwise 3x3x3 convolution over (t, y, x).

    With ``causal=True`` the time axis is padded only on the past side, so token-frame ``t`` sees
    token-frames ``t-2..t`` and never the future.
    """

    def __init__(self, dim: int, causal: bool = False):
        super().__init__()
        self.causal = causal
        self.dsconv = nn.Conv3d(dim, dim, 3, groups=dim)

    def forward(self, x: torch.Tensor, video_shape: tuple[int, int, int, int], layout: str) -> torch.Tensor:
        b, t, y, x_ = video_shape
        # any layout -> b d t y x
        v = rearrange(x, f"{layout} -> b d t y x", b=b, t=t, y=y, x=x_)
        time_pad = (2, 0) if self.causal else (1, 1)
        v = F.pad(v, (1, 1, 1, 1, *time_pad))
        v = depthwise_conv3d(v, self.dsconv)
        return rearrange(v, f"b d t y x -> {layout}")


def alibi_slopes(heads: int) -> list[float]:
    """Per-head ALiBi slopes (Press et al.), as used by the causal temporal attention."""

    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_2(heads)
    closest = 2 ** math.floor(math.log2(heads))
    return power_of_2(closest) + power_of_2(2 * closest)[0::2][: heads - closest]


def causal_alibi_bias(heads: int, length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(h, i, j) additive bias: -slope*|i-j| on the past, -inf on the future."""
    pos = torch.arange(length, device=device)
    dist = (pos[None, :] - pos[:, None]).abs().to(dtype)  # i j
    slopes = torch.tensor(alibi_slopes(heads), device=device, dtype=dtype)
    bias = -dist[None] * slopes[:, None, None]  # h i j
    future = torch.ones(length, length, device=device, dtype=torch.bool).triu(1)
    return bias.masked_fill(future, float("-inf"))


class Attention(nn.Module):
    """Multi-head attention with qk-norm, optional null key/values and optional context.

    Self-attention computes keys and values from the *un-normalised* residual stream (as the
    reference does); cross-attention normalises the context first. Learned null key/values are
    prepended to the keys and are always attendable, so a row whose text is fully dropped still
    has something to attend to (classifier-free guidance).
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        dim_head: int,
        dim_context: Optional[int] = None,
        num_null_kv: int = 0,
        causal: bool = False,
        dropout: float = 0.0,
        scale: float = 8.0,
    ):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.causal = causal
        self.scale = scale
        self.dropout = dropout
        self.is_cross = dim_context is not None
        self.num_null_kv = num_null_kv

        self.norm = LayerNorm(dim)
        self.context_norm = LayerNorm(dim_context) if self.is_cross else None
        # (h, 2*nkv, d): even slots are null keys, odd slots null values
        self.null_kv = nn.Parameter(torch.randn(heads, 2 * num_null_kv, dim_head)) if num_null_kv > 0 else None
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim_context if self.is_cross else dim, inner * 2, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Linear(inner, dim, bias=False)

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised keys and values of a cross-attention context, null slots prepended.

        The result depends only on the context, so a sampler can compute it once per clip and
        reuse it at every step. Returns k, v of shape (b, h, nkv + j, d); k already qk-normed.
        """
        kv = self.to_kv(self.context_norm(context))
        return self._finish_kv(kv, context.shape[0])

    def _finish_kv(self, kv: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = rearrange(kv, "b j (two h d) -> two b h j d", two=2, h=self.heads)
        if self.null_kv is not None:
            null = self.null_kv.to(k.dtype)
            nk = null[:, 0::2].expand(batch, -1, -1, -1)  # b h nkv d
            nv = null[:, 1::2].expand(batch, -1, -1, -1)
            k = torch.cat((nk, k), dim=2)
            v = torch.cat((nv, v), dim=2)
        k = l2norm(k) * self.k_scale.to(k.dtype)
        return k, v

    def forward(
        self,
        x: torch.Tensor,  # b i d
        *,
        context: Optional[torch.Tensor] = None,  # b j dc (cross-attention only)
        context_kv: Optional[tuple[torch.Tensor, torch.Tensor]] = None,  # precomputed context_kv(context)
        key_mask: Optional[torch.Tensor] = None,  # b j bool, True = attend (null slots are added here)
        attn_bias: Optional[torch.Tensor | RelativeBias] = None,  # h i j additive float, or its table
    ) -> torch.Tensor:
        b, i, _ = x.shape
        if self.is_cross:
            k, v = context_kv if context_kv is not None else self.context_kv(context)
            x = self.norm(x)
        else:
            kv = self.to_kv(x)  # keys/values from the un-normalised stream
            x = self.norm(x)
            k, v = self._finish_kv(kv, b)
        q = rearrange(self.to_q(x), "b i (h d) -> b h i d", h=self.heads)
        q = l2norm(q) * self.q_scale.to(q.dtype)

        if self.causal:
            # Pad the (short) time axis to a fixed block so a clip and its prefixes reduce over the
            # same width: padded positions are in everyone's future, so they are masked anyway, and
            # prefix encodings then match the full clip's bit for bit.
            padded = -(-i // CAUSAL_BLOCK) * CAUSAL_BLOCK
            q, k, v = (F.pad(t, (0, 0, 0, padded - i)) for t in (q, k, v))
        causal = causal_alibi_bias(self.heads, q.shape[2], q.device, q.dtype) if self.causal else None
        out = attention(q, k, v, scale=self.scale, bias=attn_bias, num_null=self.num_null_kv, key_mask=key_mask,
                        causal_bias=causal, dropout=self.dropout if self.training else 0.0)
        return self.to_out(rearrange(out[:, :, :i], "b h i d -> b i (h d)"))


class ContinuousPositionBias(nn.Module):
    """Relative position bias from an MLP over signed log distances (Liu et al., SwinV2).

    Distances take few distinct values, so the MLP runs once per distinct offset
    ((2t-1)(2y-1)(2x-1) rows); the (h, n, n) bias is gathered from that table, or attention reads
    the table itself (``relative``, FlexAttention).
    """

    def __init__(self, *, dim: int, heads: int, num_dims: int = 2, layers: int = 2):
        super().__init__()
        self.num_dims = num_dims
        self.net = nn.ModuleList([nn.Sequential(nn.Linear(num_dims, dim), nn.LeakyReLU(0.1))])
        for _ in range(layers - 1):
            self.net.append(nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.1)))
        self.net.append(nn.Linear(dim, heads))

    def relative(self, *dims: int, device: Optional[torch.device] = None, flex: bool = False) -> RelativeBias:
        """The bias of a ``dims`` grid as its per-offset table (see ``kernels.RelativeBias``)."""
        if len(dims) != self.num_dims:
            raise ValueError(f"position bias expects {self.num_dims} dimensions, got {dims}")
        device = device if device is not None else self.net[-1].weight.device
        # every distinct offset along each axis: (2d-1) values per axis, row-major
        offsets = [torch.arange(-(d - 1), d, device=device) for d in dims]
        table = torch.stack(torch.meshgrid(*offsets, indexing="ij"), dim=-1).float()  # ... c
        table = torch.sign(table) * torch.log(table.abs() + 1)
        table = table.to(self.net[-1].weight.dtype)  # the MLP's dtype (bf16/fp16 weights too)
        for layer in self.net:
            table = layer(table)
        return RelativeBias(table.reshape(-1, table.shape[-1]).t(), tuple(dims), flex)  # h (prod(2d-1))

    def forward(self, *dims: int, device: Optional[torch.device] = None) -> torch.Tensor:
        """The dense (h, n, n) bias of a ``dims`` grid (n = prod(dims)), contiguous."""
        return self.relative(*dims, device=device).dense()


class TransformerBlock(nn.Module):
    """PEG (optional) -> self-attention -> cross-attention (optional) -> feed-forward, all residual."""

    def __init__(self, dim: int, *, heads: int, dim_head: int, ff_mult: float, dim_context: Optional[int],
                 causal: bool, peg: bool, peg_causal: bool, num_null_kv: int, attn_dropout: float,
                 ff_dropout: float):
        super().__init__()
        self.peg = PEG(dim, causal=peg_causal) if peg else None
        self.self_attn = Attention(dim, heads=heads, dim_head=dim_head, causal=causal, dropout=attn_dropout)
        self.cross_attn = (Attention(dim, heads=heads, dim_head=dim_head, dim_context=dim_context,
                                     num_null_kv=num_null_kv, dropout=attn_dropout)
                           if dim_context is not None else None)
        self.ff = FeedForward(dim, ff_mult, ff_dropout)


class Transformer(nn.Module):
    """A stack of TransformerBlocks with a final bias-free LayerNorm."""

    def __init__(self, dim: int, *, depth: int, heads: int, dim_head: int, ff_mult: float = 4.0,
                 dim_context: Optional[int] = None, causal: bool = False, peg: bool = False,
                 peg_causal: bool = False, num_null_kv: int = 2, attn_dropout: float = 0.0,
                 ff_dropout: float = 0.0, layout: str = LAYOUT_VIDEO):
        super().__init__()
        self.layout = layout
        self.layers = nn.ModuleList([
            TransformerBlock(dim, heads=heads, dim_head=dim_head, ff_mult=ff_mult, dim_context=dim_context,
                             causal=causal, peg=peg, peg_causal=peg_causal, num_null_kv=num_null_kv,
                             attn_dropout=attn_dropout, ff_dropout=ff_dropout)
            for _ in range(depth)
        ])
        self.norm_out = LayerNorm(dim)

    @property
    def has_cross_attn(self) -> bool:
        return self.layers[0].cross_attn is not None

    def context_kvs(self, context: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer cross-attention keys/values of ``context`` (computed once, reused per step)."""
        return [layer.cross_attn.context_kv(context) for layer in self.layers]

    def forward(
        self,
        x: torch.Tensor,
        *,
        video_shape: Optional[tuple[int, int, int, int]] = None,  # (b, t, y, x) for the PEG
        attn_bias: Optional[torch.Tensor] = None,
        self_key_mask: Optional[torch.Tensor] = None,
        context: Optional[torch.Tensor] = None,
        context_mask: Optional[torch.Tensor] = None,
        context_kvs: Optional[list[tuple[torch.Tensor, torch.Tensor]]] = None,
    ) -> torch.Tensor:
        use_context = context is not None or context_kvs is not None
        for index, layer in enumerate(self.layers):
            if layer.peg is not None:
                x = layer.peg(x, video_shape, self.layout) + x
            x = layer.self_attn(x, key_mask=self_key_mask, attn_bias=attn_bias) + x
            if layer.cross_attn is not None and use_context:
                kv = context_kvs[index] if context_kvs is not None else None
                x = layer.cross_attn(x, context=context, context_kv=kv, key_mask=context_mask) + x
            x = layer.ff(x) + x
        return self.norm_out(x)

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
attention runs through ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

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
            value, gate = self.proj_in(h).chunk(2, dim=-1)
            return self.proj_out(self.dropout(F.gelu(gate) * value))
        # inference: two matmuls on the halves of proj_in (the same weights) give dense values and
        # gates, so GELU and an in-place product run on contiguous memory with one less buffer
        weight = self.proj_in.weight
        value, gate = F.linear(h, weight[:self.inner]), F.linear(h, weight[self.inner:])
        return self.proj_out(self.dropout(F.gelu(gate).mul_(value)))


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
        if torch.is_grad_enabled() and v.device.type == "cpu":
            v = DepthwiseConv3d.apply(v, self.dsconv.weight, self.dsconv.bias)
        else:
            v = self.dsconv(v)
        return rearrange(v, f"b d t y x -> {layout}")


class DepthwiseConv3d(torch.autograd.Function):
    """The PEG's 3x3x3 depthwise convolution of a padded input, with a faster CPU backward.

    The CPU's depthwise ``convolution_backward`` is about 10x slower than the forward. Here the
    input gradient is the forward convolution of the fully padded output gradient with the
    flipped kernel, and each of the 27 weight gradients is one multiply-and-sum over the
    channels-last tensors. padded (b, c, t+2, y+2, x+2), weight (c, 1, 3, 3, 3), bias (c) or None.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, padded, weight, bias):
        ctx.save_for_backward(padded, weight)
        ctx.has_bias = bias is not None
        return F.conv3d(padded, weight, bias, groups=weight.shape[0])

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")  # under CPU autocast, as the forward ran (bf16 training)
    def backward(ctx, grad):
        padded, weight = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad
        grad_input = grad_weight = grad_bias = None
        # channels-last copies (no-ops for the MaskGit layout): dense, vectorizable taps
        grad = grad.contiguous(memory_format=torch.channels_last_3d)
        if need_input:
            grad_input = F.conv3d(F.pad(grad, (2, 2, 2, 2, 2, 2)), weight.flip(2, 3, 4), groups=weight.shape[0])
        if need_weight:
            t, y, x = grad.shape[2:]
            g = grad.permute(0, 2, 3, 4, 1)  # b t y x c, contiguous
            p = padded.contiguous(memory_format=torch.channels_last_3d).permute(0, 2, 3, 4, 1)
            taps = [(g * p[:, dt:dt + t, dy:dy + y, dx:dx + x]).sum((0, 1, 2, 3))
                    for dt in range(3) for dy in range(3) for dx in range(3)]
            grad_weight = torch.stack(taps, dim=1).view_as(weight).to(weight.dtype)
        if need_bias and ctx.has_bias:
            grad_bias = grad.sum((0, 2, 3, 4))
        return grad_input, grad_weight, grad_bias


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


USE_BIASED_ATTENTION = True  # False: trainable biases go through plain SDPA (the math path on the CPU)
BIASED_ATTENTION_BLOCK = 1 << 21  # (b, h, i, j) elements recomputed at once in BiasedAttention.backward


class BiasedAttention(torch.autograd.Function):
    """SDPA with a trainable additive bias: fused forward, exact row-by-row backward (CPU training).

    ``scaled_dot_product_attention`` on the CPU has no fused kernel that returns the gradient of a
    float ``attn_mask``: with a bias that requires grad it falls back to the unfused math path
    (every (b, h, i, j) intermediate stored for backward, several times slower). This function
    runs the fused kernel on the detached bias and computes the gradients itself, recomputing the
    probabilities a block of batch rows at a time (the flash-attention backward at row
    granularity: one row for long sequences, so only an (h, i, j) block is ever live):

        P  = softmax(q k^T * scale + bias [+ key mask])      dV = P^T dO
        dP = dO V^T      dS = P * (dP - rowsum(dO * O))      dQ = dS K * scale
        dK = dS^T Q * scale                                  dBias = sum_b dS

    Shapes: q (b, h, i, d), k/v (b, h, j, d), bias (h, i, j), key_keep (b, j) bool or None
    (True = attend). No dropout, no causal mask (callers use the plain path for those).
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, key_keep, scale):
        mask = bias.detach().unsqueeze(0)  # 1 h i j
        if key_keep is not None:
            mask = mask.masked_fill(~key_keep[:, None, None, :], torch.finfo(q.dtype).min)  # b h i j
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        ctx.save_for_backward(q, k, v, bias, key_keep, out)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, bias, keep, out = ctx.saved_tensors
        scale = ctx.scale
        need_q, need_k, need_v, need_bias = ctx.needs_input_grad[:4]
        dout = dout.to(q.dtype)
        dq = torch.empty_like(q) if need_q else None
        dk = torch.empty_like(k) if need_k else None
        dv = torch.empty_like(v) if need_v else None
        acc = torch.promote_types(q.dtype, torch.float32)
        dbias = torch.zeros(bias.shape, dtype=acc, device=q.device) if need_bias else None
        bias = bias.detach()
        delta = (dout * out).sum(-1, keepdim=True)  # b h i 1 = rowsum(P * dP)
        lowest = torch.finfo(q.dtype).min
        b, h, i, j = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
        step = max(1, BIASED_ATTENTION_BLOCK // (h * i * j))  # batch rows per block
        for start in range(0, b, step):
            rows = slice(start, start + step)
            qr, kr, vr, dor = q[rows], k[rows], v[rows], dout[rows]  # c h n d
            kt = kr.transpose(-1, -2)
            if step == 1:  # long sequences: one row, bias add fused into the matmul
                sim = torch.baddbmm(bias, qr[0], kt[0], alpha=scale).unsqueeze(0)  # 1 h i j
            else:
                sim = torch.matmul(qr, kt).mul_(scale).add_(bias)  # c h i j
            if keep is not None:
                sim.masked_fill_(~keep[rows, None, None, :], lowest)
            p = sim.softmax(dim=-1)
            del sim
            if need_v:
                dv[rows] = torch.matmul(p.transpose(-1, -2), dor)
            ds = torch.matmul(dor, vr.transpose(-1, -2)).sub_(delta[rows]).mul_(p)  # c h i j
            del p
            if need_bias:
                dbias.add_(ds.sum(0) if ds.shape[0] > 1 else ds[0])
            if need_q or need_k:
                ds.mul_(scale)
            if need_q:
                dq[rows] = torch.matmul(ds, kr)
            if need_k:
                dk[rows] = torch.matmul(ds.transpose(-1, -2), qr)
        if dbias is not None:
            dbias = dbias.to(bias.dtype)
        return dq, dk, dv, dbias, None, None


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
        k = F.normalize(k, dim=-1) * self.k_scale.to(k.dtype)
        return k, v

    def forward(
        self,
        x: torch.Tensor,  # b i d
        *,
        context: Optional[torch.Tensor] = None,  # b j dc (cross-attention only)
        context_kv: Optional[tuple[torch.Tensor, torch.Tensor]] = None,  # precomputed context_kv(context)
        key_mask: Optional[torch.Tensor] = None,  # b j bool, True = attend (null slots are added here)
        attn_bias: Optional[torch.Tensor] = None,  # h i j additive float
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
        q = F.normalize(q, dim=-1) * self.q_scale.to(q.dtype)

        if self.causal:
            # Pad the (short) time axis to a fixed block so a clip and its prefixes reduce over the
            # same width: padded positions are in everyone's future, so they are masked anyway, and
            # prefix encodings then match the full clip's bit for bit.
            padded = -(-i // CAUSAL_BLOCK) * CAUSAL_BLOCK
            q, k, v = (F.pad(t, (0, 0, 0, padded - i)) for t in (q, k, v))
        dropout = self.dropout if self.training else 0.0
        if key_mask is not None and key_mask.device.type == "cpu" and bool(key_mask.all()):
            key_mask = None  # nothing to mask: skip building a (b, h, i, j) mask (free on the CPU, no sync)
        if (USE_BIASED_ATTENTION and attn_bias is not None and attn_bias.requires_grad and torch.is_grad_enabled()
                and dropout == 0.0 and not self.causal and q.device.type == "cpu"):
            # the CPU's fused SDPA kernels cannot differentiate a float mask and would fall back to
            # the slow math path; BiasedAttention keeps the fused forward and a chunked exact backward
            nkv = self.num_null_kv
            keep = None if key_mask is None else F.pad(key_mask, (nkv, 0), value=True)
            bias = attn_bias.to(q.dtype)
            bias = F.pad(bias, (nkv, 0)) if nkv else bias
            out = BiasedAttention.apply(q, k, v, bias, keep, self.scale)
        else:
            mask = self._attention_mask(b, q.shape[2], k.shape[2], key_mask, attn_bias, q.dtype, q.device)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=self.scale)
        return self.to_out(rearrange(out[:, :, :i], "b h i d -> b i (h d)"))

    def null_only(self, x: torch.Tensor) -> torch.Tensor:
        """Cross-attention for rows whose whole context is masked (CFG's unconditional rows).

        Only the learned null key/values remain, and they are the same for every token, so the
        output projection can be applied to them once:
            out = sum_s softmax_s(scale * q . k_s) * to_out(v_s)     (s over the null slots)
        No attention kernel, and a (tokens x heads*slots) combination instead of the per-token
        output matmul. Equals ``forward(x, context=..., key_mask=all False)`` up to rounding.
        x (b, i, d) -> (b, i, d).
        """
        if self.null_kv is None:
            raise ValueError("null_only needs learned null key/values (num_null_kv > 0)")
        h, dh = self.heads, self.dim_head
        null = self.null_kv.to(x.dtype)
        k = F.normalize(null[:, 0::2], dim=-1) * self.k_scale.to(x.dtype)  # h s d
        v = null[:, 1::2]  # h s d
        q = rearrange(self.to_q(self.norm(x)), "b i (h d) -> b h i d", h=h)
        q = F.normalize(q, dim=-1) * self.q_scale.to(q.dtype)
        weights = (torch.einsum("bhid,hsd->bhis", q, k) * self.scale).softmax(dim=-1)
        out_w = self.to_out.weight.to(x.dtype).view(-1, h, dh)  # dim h d
        projected = torch.einsum("hsd,ehd->hse", v, out_w)  # h s dim: to_out of each null value
        return torch.einsum("bhis,hse->bie", weights, projected)

    def _attention_mask(self, b: int, i: int, j: int, key_mask: Optional[torch.Tensor],
                        attn_bias: Optional[torch.Tensor], dtype: torch.dtype,
                        device: torch.device) -> Optional[torch.Tensor]:
        """Fold position bias, causal mask and key padding into one SDPA mask (or None)."""
        nkv = self.num_null_kv
        mask: Optional[torch.Tensor] = None
        if attn_bias is not None:
            mask = attn_bias.to(dtype)
            mask = (F.pad(mask, (nkv, 0)) if nkv else mask).unsqueeze(0)  # 1 h i j
        if self.causal:
            causal = causal_alibi_bias(self.heads, j, device, dtype)[:, -i:].unsqueeze(0)  # 1 h i j
            mask = causal if mask is None else mask + causal
        if key_mask is not None:
            keep = F.pad(key_mask, (nkv, 0), value=True)[:, None, None, :]  # b 1 1 j
            if mask is None:
                mask = keep
            else:
                mask = mask.masked_fill(~keep, torch.finfo(dtype).min)
        return mask


class ContinuousPositionBias(nn.Module):
    """Relative position bias from an MLP over signed log distances (Liu et al., SwinV2).

    Distances take few distinct values, so the MLP runs once per distinct offset
    ((2t-1)(2y-1)(2x-1) rows) and the (h, n, n) bias is gathered from that table.
    """

    def __init__(self, *, dim: int, heads: int, num_dims: int = 2, layers: int = 2):
        super().__init__()
        self.num_dims = num_dims
        self.net = nn.ModuleList([nn.Sequential(nn.Linear(num_dims, dim), nn.LeakyReLU(0.1))])
        for _ in range(layers - 1):
            self.net.append(nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.1)))
        self.net.append(nn.Linear(dim, heads))

    def forward(self, *dims: int, device: Optional[torch.device] = None) -> torch.Tensor:
        if len(dims) != self.num_dims:
            raise ValueError(f"position bias expects {self.num_dims} dimensions, got {dims}")
        device = device if device is not None else self.net[-1].weight.device
        # table of every distinct offset along each axis: (2d-1) values per axis
        offsets = [torch.arange(-(d - 1), d, device=device) for d in dims]
        table = torch.stack(torch.meshgrid(*offsets, indexing="ij"), dim=-1).float()  # ... c
        table = torch.sign(table) * torch.log(table.abs() + 1)
        table = table.to(self.net[-1].weight.dtype)  # the MLP's dtype (bf16/fp16 weights too)
        for layer in self.net:
            table = layer(table)
        table = table.reshape(-1, table.shape[-1])  # (prod(2d-1)) h

        # flat index of (pos_i - pos_j) in that table, for every pair of positions
        grid = torch.stack(torch.meshgrid(*[torch.arange(d, device=device) for d in dims], indexing="ij"), -1)
        grid = grid.reshape(-1, len(dims))  # n c
        rel = grid[:, None, :] - grid[None, :, :] + torch.tensor([d - 1 for d in dims], device=device)  # i j c
        strides = [math.prod(2 * d - 1 for d in dims[k + 1:]) for k in range(len(dims))]
        index = (rel * torch.tensor(strides, device=device)).sum(-1)  # i j
        # contiguous once here: SDPA would otherwise copy the strided view in every layer
        return table[index].permute(2, 0, 1).contiguous()  # h i j


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
        paired_halves: bool = False,  # rows [:b/2] and [b/2:] have equal tokens (CFG's cond/uncond)
        null_context_half: bool = False,  # rows [b/2:] have their whole context masked (CFG's uncond)
    ) -> torch.Tensor:
        use_context = context is not None or context_kvs is not None
        for index, layer in enumerate(self.layers):
            if index == 0 and paired_halves:
                # before the first cross-attention both halves carry the same values: compute the
                # first PEG and self-attention once and share them (CFG without doubling that work)
                half = x.shape[0] // 2
                x, keys = x[:half], None if self_key_mask is None else self_key_mask[:half]
                shape = None if video_shape is None else (half, *video_shape[1:])
                if layer.peg is not None:
                    x = layer.peg(x, shape, self.layout) + x
                x = layer.self_attn(x, key_mask=keys, attn_bias=attn_bias) + x
                x = torch.cat((x, x))
            else:
                if layer.peg is not None:
                    x = layer.peg(x, video_shape, self.layout) + x
                x = layer.self_attn(x, key_mask=self_key_mask, attn_bias=attn_bias) + x
            if layer.cross_attn is not None and use_context:
                kv = context_kvs[index] if context_kvs is not None else None
                if null_context_half and layer.cross_attn.null_kv is not None:
                    # the unconditional half attends to the null slots only: closed form, no kernel
                    half = x.shape[0] // 2
                    cond = layer.cross_attn(
                        x[:half], context=None if context is None else context[:half],
                        context_kv=None if kv is None else (kv[0][:half], kv[1][:half]),
                        key_mask=None if context_mask is None else context_mask[:half])
                    x = torch.cat((cond, layer.cross_attn.null_only(x[half:]))) + x
                else:
                    x = layer.cross_attn(x, context=context, context_kv=kv, key_mask=context_mask) + x
            x = layer.ff(x) + x
        return self.norm_out(x)

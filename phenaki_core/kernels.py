"""Attention and convolution kernels: which implementation runs where, in one place.

The layers (``layers.py``) describe the math once; this module picks how it runs:

- ``attention``: scaled-dot-product attention with an optional additive position bias, null
  key/value slots, a causal bias and a key-padding mask.
  - ``RelativeBias`` (the MaskGit's 3D position bias as its small per-offset table) runs through
    FlexAttention on CUDA, with a ``score_mod`` that reads the table by offset: the dense
    (heads, n, n) bias is never built or streamed from memory. Elsewhere it is made dense once.
  - A dense bias that requires grad on the CPU (training) goes through ``BiasedAttention``: the CPU's
    fused SDPA kernels cannot differentiate a float mask and would fall back to the slow math path.
  - Short queries and keys on the CPU under autograd (the C-ViViT's causal temporal attention over
    a few token-frames) run as plain matmuls (``short_attention``): the fused backward is slow there.
  - Everything else is ``F.scaled_dot_product_attention`` with the bias and masks folded into one mask.
- ``depthwise_conv3d``: the PEG's convolution; on the CPU under autograd, ``DepthwiseConv3d`` has a
  faster backward.

All paths compute the same values (tests compare each with a plain einsum reference).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from .errors import ConfigError

logger = logging.getLogger(__name__)

ATTENTION_BACKENDS = ("auto", "flex", "sdpa")


@dataclass(eq=False)
class RelativeBias:
    """A relative position bias over a token grid (e.g. (t, y, x)), kept as its per-offset table.

    table: (h, (2t-1)(2y-1)(2x-1)) for a (t, y, x) grid, the bias of every distinct offset; ``dense()`` gathers the
    (h, n, n) bias from it (built once, then cached). ``flex``: run attention through FlexAttention.
    """

    table: torch.Tensor
    grid: tuple[int, ...]
    flex: bool = False
    _dense: Optional[torch.Tensor] = field(default=None, repr=False)

    def index(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Table column of the offset between flat positions i and j (any broadcastable shapes)."""
        column, stride = 0, math.prod(self.grid)
        for size in self.grid:  # row-major coordinates; offsets -(size-1)..size-1 per axis
            stride //= size
            column = column * (2 * size - 1) + ((i // stride) % size - (j // stride) % size + size - 1)
        return column

    def dense(self) -> torch.Tensor:
        if self._dense is None:
            n = math.prod(self.grid)
            pos = torch.arange(n, device=self.table.device)
            self._dense = self.table[:, self.index(pos[:, None], pos[None, :])].contiguous()  # h n n
        return self._dense

    def to(self, dtype: torch.dtype) -> "RelativeBias":
        return RelativeBias(self.table.to(dtype), self.grid, self.flex)


# What ``attention="auto"`` picks on CUDA. SDPA with the dense bias until FlexAttention has been
# measured faster on a GPU (bench/gpu_check.sh times both: eager-sdpa, eager-flex, graphs-flex).
AUTO_FLEX_ON_CUDA = False


def wants_flex(backend: str, device: torch.device) -> bool:
    """Whether attention with a ``RelativeBias`` runs through FlexAttention: ``flex`` anywhere
    (compiled with Triton on CUDA; eagerly elsewhere, a slow reference), ``sdpa`` never, ``auto``
    on CUDA with Triton when ``AUTO_FLEX_ON_CUDA``."""
    if backend not in ATTENTION_BACKENDS:
        raise ConfigError(f"attention must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    if backend == "sdpa" or (backend == "auto" and not (AUTO_FLEX_ON_CUDA and device.type == "cuda"
                                                        and _has_triton())):
        return False  # (decided without importing FlexAttention: that pulls in the compiler stack)
    if _flex_attention_fn(device) is None:
        if backend == "flex":
            raise ConfigError("attention='flex' needs torch.nn.attention.flex_attention (torch >= 2.5); "
                              "use attention='sdpa'")
        return False
    return True


def _has_triton() -> bool:
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return False
    return has_triton()


# per device type: the flex_attention in use there, or None where it is missing or has failed (then
# attention runs through scaled_dot_product_attention); filled on first use
FLEX_ATTENTION: dict[str, object] = {}


def _flex_attention_fn(device: torch.device):
    """flex_attention, compiled on CUDA (its fast kernels need compiling), eager elsewhere; None when
    absent or when it failed on this device before."""
    key = device.type
    if key not in FLEX_ATTENTION:
        try:
            from torch.nn.attention.flex_attention import flex_attention
        except ImportError:
            FLEX_ATTENTION[key] = None
        else:
            FLEX_ATTENTION[key] = torch.compile(flex_attention) if device.type == "cuda" else flex_attention
    return FLEX_ATTENTION[key]


def _flex_attention(q, k, v, bias: RelativeBias, num_null: int, scale: float) -> Optional[torch.Tensor]:
    """FlexAttention with a score_mod reading the bias table; None (and a warning, once) if it fails."""
    table = bias.table.to(q.dtype)

    def score_mod(score, b, h, q_idx, kv_idx):
        j = kv_idx - num_null  # keys: num_null learned null slots, then the grid
        column = bias.index(q_idx, j.clamp(min=0))
        return torch.where(kv_idx >= num_null, score + table[h, column], score)

    flex = _flex_attention_fn(q.device)
    if flex is None:
        return None
    try:
        return flex(q, k, v, score_mod=score_mod, scale=scale)
    except Exception as exc:  # noqa: BLE001 - e.g. no working compiler: plain SDPA computes the same
        logger.warning("FlexAttention failed on %s (%s: %s); using scaled_dot_product_attention",
                       q.device.type, type(exc).__name__, exc)
        FLEX_ATTENTION[q.device.type] = None
        return None


def attention(
    q: torch.Tensor,  # b h i d
    k: torch.Tensor,  # b h j d (the first num_null keys are null slots: no position bias)
    v: torch.Tensor,  # b h j d
    *,
    scale: float,
    bias: Optional[torch.Tensor | RelativeBias] = None,  # h i (j - num_null) additive
    num_null: int = 0,
    key_mask: Optional[torch.Tensor] = None,  # b (j - num_null) bool, True = attend
    causal_bias: Optional[torch.Tensor] = None,  # h i j additive (-inf on the future)
    dropout: float = 0.0,
) -> torch.Tensor:
    """Attention output (b, h, i, d); see the module doc for which kernel runs."""
    if isinstance(bias, RelativeBias):
        if bias.flex and key_mask is None and causal_bias is None and dropout == 0.0:
            out = _flex_attention(q, k, v, bias, num_null, scale)
            if out is not None:
                return out
        bias = bias.dense().to(q.dtype)
    if (q.device.type == "cpu" and torch.is_grad_enabled() and dropout == 0.0
            and max(q.shape[2], k.shape[2]) <= SHORT_ATTENTION):
        return short_attention(q, k, v, attention_mask(bias, num_null, key_mask, causal_bias, q.dtype), scale)
    if (USE_BIASED_ATTENTION and bias is not None and bias.requires_grad and torch.is_grad_enabled()
            and dropout == 0.0 and causal_bias is None and q.device.type == "cpu"):
        keep = None if key_mask is None else F.pad(key_mask, (num_null, 0), value=True)
        bias = bias.to(q.dtype)
        return BiasedAttention.apply(q, k, v, F.pad(bias, (num_null, 0)) if num_null else bias, keep, scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask(bias, num_null, key_mask, causal_bias,
                                                                            q.dtype), dropout_p=dropout, scale=scale)


# On the CPU under autograd, attention with at most this many queries and keys (the C-ViViT's causal
# temporal attention: a short clip's token-frames) runs as plain matmuls: the fused CPU kernels'
# backward spends its time on per-row set-up for rows this short (measured 14x slower in bf16, 1.8x
# in fp32, at (512 rows x 8 heads, 16 x 16)). The (b, h, i, j) probabilities it keeps for backward
# are then as small as the q, k, v it keeps anyway; long queries over a short text (cross-attention)
# stay on the fused kernel, which keeps less.
SHORT_ATTENTION = 32


def short_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                    scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v as plain matmuls, the scores and softmax in float32 (as the
    fused kernels keep them: bf16 scores near 60 are rounded to steps of 0.25). q (b h i d), k/v (b h j d); mask
    broadcastable to (b h i j), additive or bool (True = attend, as SDPA reads it), or None."""
    sim = torch.matmul(q.float(), k.float().transpose(-1, -2)).mul_(scale)  # b h i j
    if mask is not None and mask.dtype == torch.bool:
        sim = sim.masked_fill(~mask, torch.finfo(sim.dtype).min)
    elif mask is not None:
        sim = sim + mask
    return torch.matmul(sim.softmax(-1).to(v.dtype), v)


def attention_mask(bias: Optional[torch.Tensor], num_null: int, key_mask: Optional[torch.Tensor],
                   causal_bias: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """Fold position bias, causal bias and key padding into one SDPA mask (or None)."""
    mask: Optional[torch.Tensor] = None
    if bias is not None:
        mask = bias.to(dtype)
        mask = (F.pad(mask, (num_null, 0)) if num_null else mask).unsqueeze(0)  # 1 h i j
    if causal_bias is not None:
        causal = causal_bias.to(dtype).unsqueeze(0)  # 1 h i j
        mask = causal if mask is None else mask + causal
    if key_mask is not None:
        keep = F.pad(key_mask, (num_null, 0), value=True)[:, None, None, :]  # b 1 1 j
        mask = keep if mask is None else mask.masked_fill(~keep, torch.finfo(dtype).min)
    return mask


def compiled_token_choice(choose, device: torch.device):
    """``sampling.choose_tokens`` as one fused kernel per step (temperature, Gumbel noise from the
    counter hash, argmax, log-sum-exp and the chosen token's log-prob in one pass over the logits):
    compiled on CUDA where Triton is available, else ``choose`` itself. A compile failure falls
    back to ``choose`` with one warning."""
    if device.type != "cuda" or not _has_triton():
        return choose
    compiled = torch.compile(choose)
    state = {"fn": compiled}

    def call(logits, temperature, keys):
        try:
            return state["fn"](logits, temperature, keys)
        except Exception as exc:  # noqa: BLE001 - the eager tail computes the same
            if state["fn"] is choose:
                raise
            logger.warning("compiling the sampler tail failed (%s: %s); running it eagerly", type(exc).__name__, exc)
            state["fn"] = choose
            return choose(logits, temperature, keys)

    return call


def depthwise_conv3d(padded: torch.Tensor, conv: torch.nn.Conv3d) -> torch.Tensor:
    """The PEG's depthwise 3x3x3 convolution of an already padded (b, c, t, y, x) input."""
    if torch.is_grad_enabled() and padded.device.type == "cpu":
        return DepthwiseConv3d.apply(padded, conv.weight, conv.bias)
    return conv(padded)


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
            # in the gradient's dtype (bf16 under autocast, where the forward convolution ran in bf16
            # from a float32 input): mixed dtypes would convert every strided tap on the fly, 27 times
            p = padded.to(grad.dtype).contiguous(memory_format=torch.channels_last_3d).permute(0, 2, 3, 4, 1)
            taps = [(g * p[:, dt:dt + t, dy:dy + y, dx:dx + x]).sum((0, 1, 2, 3))
                    for dt in range(3) for dy in range(3) for dx in range(3)]
            grad_weight = torch.stack(taps, dim=1).view_as(weight).to(weight.dtype)
        if need_bias and ctx.has_bias:
            grad_bias = grad.sum((0, 2, 3, 4))
        return grad_input, grad_weight, grad_bias


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

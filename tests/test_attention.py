"""Numerical references: the SDPA attention, the cached position bias and the PEG."""

import math

import torch
import torch.nn.functional as F

from phenaki_core.layers import PEG, Attention, ContinuousPositionBias, alibi_slopes


def reference_attention(attn: Attention, x, context=None, key_mask=None, attn_bias=None):
    """Plain einsum attention with the same math (the form phenaki-pytorch uses)."""
    kv_input = attn.context_norm(context) if context is not None else x
    xn = attn.norm(x)
    q = attn.to_q(xn)
    k, v = attn.to_kv(kv_input).chunk(2, dim=-1)
    h = attn.heads
    q, k, v = (t.reshape(t.shape[0], t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
    if attn.null_kv is not None:
        nk = attn.null_kv[:, 0::2].expand(x.shape[0], -1, -1, -1)
        nv = attn.null_kv[:, 1::2].expand(x.shape[0], -1, -1, -1)
        k, v = torch.cat((nk, k), 2), torch.cat((nv, v), 2)
    q = F.normalize(q, dim=-1) * attn.q_scale
    k = F.normalize(k, dim=-1) * attn.k_scale
    sim = torch.einsum("bhid,bhjd->bhij", q, k) * attn.scale
    i, j = sim.shape[-2:]
    if attn_bias is not None:
        sim = sim + F.pad(attn_bias, (attn.num_null_kv, 0))
    if key_mask is not None:
        keep = F.pad(key_mask, (attn.num_null_kv, 0), value=True)[:, None, None, :]
        sim = sim.masked_fill(~keep, -torch.finfo(sim.dtype).max)
    if attn.causal:
        pos = torch.arange(j)
        slopes = torch.tensor(alibi_slopes(h))
        sim = sim - (pos[None, :] - pos[:, None]).abs()[None] * slopes[:, None, None]
        sim = sim.masked_fill(torch.ones(i, j, dtype=torch.bool).triu(1), -torch.finfo(sim.dtype).max)
    out = torch.einsum("bhij,bhjd->bhid", sim.softmax(-1), v)
    return attn.to_out(out.transpose(1, 2).reshape(x.shape[0], i, -1))


def perturbed(module):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return module


def test_self_attention_with_bias_and_key_mask_matches_einsum_reference():
    torch.manual_seed(0)
    attn = perturbed(Attention(32, heads=4, dim_head=8))
    x = torch.randn(3, 12, 32)
    bias = torch.randn(4, 12, 12)
    key_mask = torch.ones(3, 12, dtype=torch.bool)
    key_mask[1, 7:] = False
    out = attn(x, key_mask=key_mask, attn_bias=bias)
    ref = reference_attention(attn, x, key_mask=key_mask, attn_bias=bias)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_cross_attention_with_null_kv_matches_reference_even_when_all_text_is_masked():
    torch.manual_seed(0)
    attn = perturbed(Attention(32, heads=2, dim_head=16, dim_context=24, num_null_kv=2))
    x, ctx = torch.randn(2, 10, 32), torch.randn(2, 5, 24)
    for mask in (torch.ones(2, 5, dtype=torch.bool), torch.zeros(2, 5, dtype=torch.bool)):
        out = attn(x, context=ctx, key_mask=mask)
        torch.testing.assert_close(out, reference_attention(attn, x, context=ctx, key_mask=mask),
                                   atol=1e-5, rtol=1e-5)
    # fully dropped text: the output cannot depend on the text content
    dropped = torch.zeros(2, 5, dtype=torch.bool)
    torch.testing.assert_close(attn(x, context=ctx, key_mask=dropped), attn(x, context=ctx * 3 + 1, key_mask=dropped))


def test_precomputed_context_kv_gives_the_same_output():
    torch.manual_seed(0)
    attn = perturbed(Attention(32, heads=2, dim_head=16, dim_context=24, num_null_kv=2))
    x, ctx = torch.randn(2, 10, 32), torch.randn(2, 5, 24)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(attn(x, context=ctx, key_mask=mask),
                               attn(x, context_kv=attn.context_kv(ctx), key_mask=mask), atol=0, rtol=0)


def test_causal_attention_with_alibi_matches_reference():
    torch.manual_seed(0)
    attn = perturbed(Attention(32, heads=4, dim_head=8, causal=True))
    x = torch.randn(5, 9, 32)
    torch.testing.assert_close(attn(x), reference_attention(attn, x), atol=1e-5, rtol=1e-5)


def test_cached_position_bias_equals_the_pairwise_mlp():
    torch.manual_seed(0)
    cpb = perturbed(ContinuousPositionBias(dim=16, heads=3, num_dims=3))
    dims = (3, 2, 4)
    grid = torch.stack(torch.meshgrid(*[torch.arange(d) for d in dims], indexing="ij"), -1).reshape(-1, 3)
    rel = (grid[:, None] - grid[None, :]).float()
    rel = torch.sign(rel) * torch.log(rel.abs() + 1)
    for layer in cpb.net:
        rel = layer(rel)
    torch.testing.assert_close(cpb(*dims), rel.permute(2, 0, 1), atol=1e-6, rtol=1e-6)


def test_causal_peg_never_looks_at_future_frames():
    torch.manual_seed(0)
    peg = perturbed(PEG(8, causal=True))
    b, t, y, x = 2, 5, 3, 3
    seq = torch.randn(b * y * x, t, 8)
    out = peg(seq, (b, t, y, x), "(b y x) t d")
    changed = seq.clone()
    changed[:, 3:] += 10
    out2 = peg(changed, (b, t, y, x), "(b y x) t d")
    assert torch.equal(out[:, :3], out2[:, :3])
    assert not torch.allclose(out[:, 3:], out2[:, 3:])


def test_alibi_slopes_for_non_power_of_two_heads():
    slopes = alibi_slopes(6)
    assert len(slopes) == 6 and all(0 < s < 1 for s in slopes)
    assert math.isclose(alibi_slopes(8)[0], 0.5)

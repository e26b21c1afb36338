"""The kernels keep the reference math: biased-attention gradients, FlexAttention with the bias table,
the PEG's backward, the compile flag off CUDA."""

import logging
import math

import pytest
import torch

import phenaki_core.kernels as layers
from helpers import build_tiny, random_text
from phenaki_core import SamplerConfig, sample_ids
from phenaki_core.kernels import BiasedAttention, DepthwiseConv3d, RelativeBias, attention
from phenaki_core.layers import PEG, Attention, ContinuousPositionBias, FeedForward


def reference(q, k, v, bias, keep, scale):
    sim = q @ k.transpose(-1, -2) * scale + bias
    if keep is not None:
        sim = sim.masked_fill(~keep[:, None, None, :], torch.finfo(sim.dtype).min)
    return sim.softmax(-1) @ v


def inputs(dtype, b=5, h=3, i=7, j=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g, dtype=dtype).requires_grad_() for n in (i, j, j))
    bias = torch.randn(h, i, j, generator=g, dtype=dtype).requires_grad_()
    keep = torch.rand(b, j, generator=g) > 0.3
    keep[:, 0] = True
    return q, k, v, bias, keep


@pytest.mark.parametrize(("with_keep", "block"), [(True, 1), (True, 2 * 3 * 4 * 2), (False, 1 << 21)])
def test_biased_attention_gradcheck_in_float64(with_keep, block, monkeypatch):
    """Blocks of one row (fused bias matmul), of two rows (+ a remainder), and of the whole batch."""
    monkeypatch.setattr(layers, "BIASED_ATTENTION_BLOCK", block)
    q, k, v, bias, keep = inputs(torch.float64, b=3, h=2, i=3, j=4, d=2)
    keep = keep if with_keep else None
    assert torch.autograd.gradcheck(lambda *t: BiasedAttention.apply(*t, keep, 8.0), (q, k, v, bias), fast_mode=True)


@pytest.mark.parametrize("block", [1, 1 << 21])
@pytest.mark.parametrize("with_keep", [False, True])
def test_biased_attention_float32_gradients_are_as_accurate_as_the_reference_math(with_keep, block, monkeypatch):
    """Against float64 truth, our float32 gradients err no more than the plain float32 math does."""
    monkeypatch.setattr(layers, "BIASED_ATTENTION_BLOCK", block)
    q, k, v, bias, keep = inputs(torch.float32, seed=1, j=9)
    keep = keep if with_keep else None
    grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(2))
    out = BiasedAttention.apply(q, k, v, bias, keep, 8.0)
    ours = torch.autograd.grad(out, (q, k, v, bias), grad)
    ref_out = reference(q, k, v, bias, keep, 8.0)
    refs = torch.autograd.grad(ref_out, (q, k, v, bias), grad)
    wide = [t.detach().double().requires_grad_() for t in (q, k, v, bias)]
    truth_out = reference(*wide, keep, 8.0)
    truths = torch.autograd.grad(truth_out, wide, grad.double())
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for a, r, t in zip(ours, refs, truths):
        ours_err, ref_err = (a.double() - t).abs().max().item(), (r.double() - t).abs().max().item()
        assert ours_err <= 4 * ref_err + 1e-6, (ours_err, ref_err)
        torch.testing.assert_close(a, r, atol=1e-4, rtol=1e-4)


def test_attention_layer_with_trainable_bias_takes_the_fast_path_and_matches_plain_sdpa(monkeypatch):
    torch.manual_seed(0)
    attn = Attention(32, heads=4, dim_head=8)
    n = 5 * 8  # longer than SHORT_ATTENTION: the fused forward with its own backward
    assert n > layers.SHORT_ATTENTION
    x = torch.randn(3, n, 32, requires_grad=True)
    cpb = ContinuousPositionBias(dim=16, heads=4, num_dims=2)
    key_mask = torch.ones(3, n, dtype=torch.bool)
    key_mask[1, 26:] = False
    calls = []
    original = BiasedAttention.apply
    monkeypatch.setattr(BiasedAttention, "apply", lambda *a: calls.append(1) or original(*a))

    def grads():
        out = attn(x, key_mask=key_mask, attn_bias=cpb(5, 8))
        out.square().sum().backward()
        result = [x.grad.clone()] + [p.grad.clone() for p in list(attn.parameters()) + list(cpb.parameters())
                                     if p.grad is not None]
        attn.zero_grad(), cpb.zero_grad(), x.grad.zero_()
        return out.detach(), result

    fast_out, fast = grads()
    assert calls, "a bias that requires grad on the CPU must use BiasedAttention"
    monkeypatch.setattr(layers, "USE_BIASED_ATTENTION", False)  # the plain SDPA (math) path
    calls.clear()
    plain_out, plain = grads()
    assert not calls
    torch.testing.assert_close(fast_out, plain_out, atol=1e-5, rtol=1e-5)
    assert len(fast) == len(plain) > 3
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["causal", "bias+keys", "keys only"])
def test_short_rows_under_autograd_take_plain_matmuls_with_the_reference_values_and_gradients(kind, dtype):
    """Short rows and columns (the C-ViViT's causal temporal attention over a few token-frames):
    plain matmuls on the CPU under autograd, equal to the float64 math in values and gradients."""
    q, k, v, bias, keep = inputs(dtype, b=4, h=3, i=9, j=9, d=8, seed=3)
    causal = torch.full((9, 9), float("-inf"), dtype=dtype).triu(1).expand(3, 9, 9)
    kwargs = {"causal": dict(causal_bias=causal), "bias+keys": dict(bias=bias, key_mask=keep),
              "keys only": dict(key_mask=keep)}[kind]
    out = attention(q, k, v, scale=8.0, **kwargs)
    wide = [t.detach().double().requires_grad_() for t in (q, k, v, bias)]
    ref_bias = wide[3] if kind == "bias+keys" else (causal.double() if kind == "causal" else 0)
    ref = reference(*wide[:3], ref_bias, keep if kind != "causal" else None, 8.0)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=4e-2, rtol=4e-2)
    torch.testing.assert_close(out.double(), ref, **tol)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    inputs_ = (q, k, v, bias) if kind == "bias+keys" else (q, k, v)
    ours = torch.autograd.grad(out, inputs_, grad.to(dtype))
    truths = torch.autograd.grad(ref, wide[:len(inputs_)], grad.double())
    for a, t in zip(ours, truths):
        gtol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=0.1, rtol=0.1)
        torch.testing.assert_close(a.double(), t, **gtol)


def test_all_true_key_mask_is_the_same_as_no_mask():
    torch.manual_seed(0)
    attn = Attention(32, heads=4, dim_head=8)
    x, bias = torch.randn(2, 9, 32), torch.randn(4, 9, 9)
    torch.testing.assert_close(attn(x, attn_bias=bias, key_mask=torch.ones(2, 9, dtype=torch.bool)),
                               attn(x, attn_bias=bias), atol=0, rtol=0)


def test_compile_flag_on_cpu_samples_eagerly_with_identical_output(caplog):
    model = build_tiny()
    text = random_text(2)
    cfg = SamplerConfig(steps=3)
    eager = sample_ids(model, text, num_frames=5, sampler=cfg, generator=torch.Generator().manual_seed(3))
    with caplog.at_level(logging.INFO, logger="phenaki_core.guided"):
        flagged = sample_ids(model, text, num_frames=5, sampler=cfg, generator=torch.Generator().manual_seed(3),
                               compile=True)
    assert torch.equal(eager, flagged)
    assert any("eagerly" in r.message for r in caplog.records)


EAGER_FLEX = "ignore:flex_attention called without torch.compile"  # the CPU reference path, on purpose


@pytest.mark.filterwarnings(EAGER_FLEX)
@pytest.mark.parametrize("grid, heads, nkv", [((3, 2, 2), 4, 0), ((2, 3, 4), 2, 2), ((4, 4), 3, 0)])
def test_flex_attention_reading_the_bias_table_equals_sdpa_with_the_dense_bias(grid, heads, nkv):
    pytest.importorskip("torch.nn.attention.flex_attention")
    g = torch.Generator().manual_seed(1)
    cpb = ContinuousPositionBias(dim=16, heads=heads, num_dims=len(grid))
    n = math.prod(grid)
    q, k, v = (torch.randn(2, heads, length, 16, generator=g) for length in (n, n + nkv, n + nkv))
    with torch.no_grad():
        relative = cpb.relative(*grid)
        flex = RelativeBias(relative.table, grid, flex=True)
        dense = attention(q, k, v, scale=8.0, bias=cpb(*grid), num_null=nkv)
        torch.testing.assert_close(attention(q, k, v, scale=8.0, bias=flex, num_null=nkv), dense,
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(attention(q, k, v, scale=8.0, bias=relative, num_null=nkv), dense,
                                   atol=0, rtol=0)
    # the table is the offsets' bias: entry (i, j) of the dense bias is the table at offset i - j
    i, j = n - 1, 0
    assert torch.equal(cpb(*grid)[:, i, j], relative.table[:, relative.index(torch.tensor(i), torch.tensor(j))])


@pytest.mark.filterwarnings(EAGER_FLEX)
def test_sampling_with_flex_attention_gives_the_sdpa_tokens():
    pytest.importorskip("torch.nn.attention.flex_attention")
    model = build_tiny()
    text = random_text(2)
    runs = [sample_ids(model, text, num_frames=5, sampler=SamplerConfig(steps=3), attention=backend,
                         generator=torch.Generator().manual_seed(2)) for backend in ("sdpa", "flex")]
    assert torch.equal(*runs)


def test_position_bias_is_contiguous_and_sampling_bias_is_built_once(monkeypatch):
    model = build_tiny()
    assert model.maskgit.position_bias((3, 2, 2)).is_contiguous()
    calls = []
    original = type(model.maskgit.continuous_pos_bias).relative
    monkeypatch.setattr(type(model.maskgit.continuous_pos_bias), "relative",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    sample_ids(model, random_text(1), num_frames=5, sampler=SamplerConfig(steps=4),
                 generator=torch.Generator().manual_seed(0))
    assert len(calls) == 1


def test_guided_sampling_is_still_seed_reproducible():
    model = build_tiny()
    text = random_text(2, pad_last=2)
    runs = [sample_ids(model, text, num_frames=5, sampler=SamplerConfig(steps=4, cond_scale=2.5),
                         generator=torch.Generator().manual_seed(11)) for _ in range(2)]
    assert torch.equal(*runs)


def test_feed_forward_inference_split_matmuls_equal_one_matmul_and_chunk():
    torch.manual_seed(0)
    ff = FeedForward(32)
    with torch.no_grad():
        ff.norm.weight.add_(torch.randn(32) * 0.2)
    x = torch.randn(2, 7, 32, requires_grad=True)

    def reference(inp):
        value, gate = ff.proj_in(ff.norm(inp)).chunk(2, dim=-1)
        return ff.proj_out(torch.nn.functional.gelu(gate) * value)

    with torch.no_grad():
        torch.testing.assert_close(ff(x), reference(x), atol=1e-6, rtol=1e-6)
    ours = torch.autograd.grad(ff(x).square().sum(), [x, ff.proj_in.weight, ff.proj_out.weight])
    refs = torch.autograd.grad(reference(x).square().sum(), [x, ff.proj_in.weight, ff.proj_out.weight])
    for a, r in zip(ours, refs):
        torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-5)


def test_depthwise_conv_backward_gradcheck():
    g = torch.Generator().manual_seed(0)
    padded = torch.randn(2, 3, 5, 4, 4, generator=g, dtype=torch.float64).requires_grad_()
    weight = torch.randn(3, 1, 3, 3, 3, generator=g, dtype=torch.float64).requires_grad_()
    bias = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(DepthwiseConv3d.apply, (padded, weight, bias), fast_mode=True)


@pytest.mark.parametrize("causal", [False, True])
def test_peg_training_gradients_match_the_plain_convolution(causal):
    torch.manual_seed(0)
    peg = PEG(8, causal=causal)
    b, t, y, x = 2, 4, 3, 3
    seq = torch.randn(b * y * x, t, 8, requires_grad=True)
    grad = torch.randn(b * y * x, t, 8)
    out = peg(seq, (b, t, y, x), "(b y x) t d")
    ours = torch.autograd.grad(out, [seq, peg.dsconv.weight, peg.dsconv.bias], grad)
    with torch.no_grad():
        plain = peg(seq, (b, t, y, x), "(b y x) t d")  # no grad: the nn.Conv3d path
    torch.testing.assert_close(out, plain, atol=0, rtol=0)
    v = torch.nn.functional.pad(seq.reshape(b, y, x, t, 8).permute(0, 4, 3, 1, 2),
                                (1, 1, 1, 1, 2, 0) if causal else (1, 1, 1, 1, 1, 1))
    ref = peg.dsconv(v).permute(0, 3, 4, 2, 1).reshape(b * y * x, t, 8)
    refs = torch.autograd.grad(ref, [seq, peg.dsconv.weight, peg.dsconv.bias], grad)
    for a, r in zip(ours, refs):
        torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-5)


def test_a_failing_flex_attention_falls_back_to_sdpa_with_a_warning(monkeypatch, caplog):
    import phenaki_core.kernels as kernels

    def broken(*args, **kwargs):
        raise RuntimeError("no Triton")

    monkeypatch.setitem(kernels.FLEX_ATTENTION, "cpu", broken)
    g = torch.Generator().manual_seed(0)
    cpb = ContinuousPositionBias(dim=16, heads=2, num_dims=3)
    q, k, v = (torch.randn(1, 2, 12, 8, generator=g) for _ in range(3))
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="phenaki_core.kernels"):
        relative = cpb.relative(3, 2, 2)
        out = attention(q, k, v, scale=8.0, bias=RelativeBias(relative.table, (3, 2, 2), flex=True))
        torch.testing.assert_close(out, attention(q, k, v, scale=8.0, bias=cpb(3, 2, 2)), atol=1e-6, rtol=1e-5)
    assert any("FlexAttention failed" in r.message for r in caplog.records)
    assert kernels.FLEX_ATTENTION["cpu"] is None  # not tried again

"""The sampler: determinism, priming, CFG, re-masking, the callback; and the pure loop with fakes."""

import math

import pytest
import torch

from phenaki_core import ConfigError, InputError, SamplerConfig, sample_ids, sample_tokens
from phenaki_core.guided import sample_images
from phenaki_core.guided_model import GuidedModel
from phenaki_core.sampling import num_masked

from helpers import build_tiny, random_text

FAST = SamplerConfig(steps=3)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("remask", ["confidence", "critic"])
def test_same_seed_gives_bit_identical_output(remask):
    model = build_tiny()
    cfg = SamplerConfig(steps=4, remask=remask)
    a = sample_ids(model, random_text(2), num_frames=9, sampler=cfg, generator=gen(7))
    b = sample_ids(model, random_text(2), num_frames=9, sampler=cfg, generator=gen(7))
    c = sample_ids(model, random_text(2), num_frames=9, sampler=cfg, generator=gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    video_a = model.cvivit.decode_from_ids(a)
    assert torch.equal(video_a, model.cvivit.decode_from_ids(b))


def test_sampling_never_touches_the_global_rng():
    model = build_tiny()
    state = torch.get_rng_state()
    sample_ids(model, random_text(1), num_frames=5, sampler=FAST, generator=gen(0))
    assert torch.equal(state, torch.get_rng_state())


def test_prime_tokens_stay_fixed():
    model = build_tiny()
    prime = torch.randint(0, 64, (2, 3, 2, 2), generator=gen(0))
    out = sample_ids(model, random_text(2), num_frames=4, prime_ids=prime, sampler=SamplerConfig(steps=5),
                     generator=gen(1))
    assert out.shape == (2, 5, 2, 2)
    assert torch.equal(out[:, :3], prime)


def test_every_token_is_filled_and_in_range():
    model = build_tiny()
    out = sample_ids(model, random_text(3), num_frames=9, sampler=FAST, generator=gen(0))
    assert out.shape == (3, 5, 2, 2)
    assert out.min() >= 0 and out.max() < 64


def every_position(batch, n):
    return torch.arange(n).expand(batch, -1)


def test_batched_cfg_in_hidden_space_equals_guidance_of_separate_passes_logits():
    model = build_tiny()
    text = random_text(2, pad_last=2)
    ids = torch.randint(0, 65, (2, 5, 2, 2), generator=gen(3))
    guided = GuidedModel(model, text, None, None, (5, 2, 2), 3.0).logits(ids.flatten(1), every_position(2, 20))
    cond = model.maskgit(ids, text_embeds=text.embeds, text_mask=text.mask)
    null = model.maskgit(ids, text_embeds=text.embeds, text_mask=torch.zeros_like(text.mask))
    torch.testing.assert_close(guided, null + (cond - null) * 3.0, atol=1e-5, rtol=1e-5)


def test_guided_logits_at_some_positions_are_those_positions_of_the_full_logits():
    model = build_tiny()
    text = random_text(2)
    prime = torch.randint(0, 64, (2, 1, 2, 2), generator=gen(1))
    guided = GuidedModel(model, text, None, prime, (5, 2, 2), 2.5)
    ids = torch.randint(0, 65, (2, 16), generator=gen(3))
    positions = torch.tensor([[3, 0, 15], [7, 8, 1]])
    full = guided.logits(ids, every_position(2, 16))
    torch.testing.assert_close(guided.logits(ids, positions), full.gather(1, positions[..., None].expand(-1, -1, 64)))


def test_negative_prompt_replaces_the_unconditional_branch():
    model = build_tiny()
    text, negative = random_text(1, seed=1), random_text(1, length=3, seed=2)
    ids = torch.randint(0, 65, (1, 20), generator=gen(3))
    guided = GuidedModel(model, text, negative, None, (5, 2, 2), 2.0)
    cond = model.maskgit(ids, text_embeds=text.embeds, text_mask=text.mask, token_shape=(5, 2, 2))
    neg = model.maskgit(ids, text_embeds=negative.embeds, text_mask=negative.mask, token_shape=(5, 2, 2))
    torch.testing.assert_close(guided.logits(ids, every_position(1, 20)), neg + (cond - neg) * 2.0,
                               atol=1e-5, rtol=1e-5)


def test_callback_runs_once_per_step_and_can_cancel():
    model = build_tiny()
    steps = []
    sample_ids(model, random_text(1), num_frames=5, sampler=SamplerConfig(steps=6), generator=gen(0),
                 callback=lambda s: steps.append((s.step, s.steps, int(s.mask.sum()))))
    assert [s[0] for s in steps] == list(range(6))
    masked = [s[2] for s in steps]
    assert masked[0] == 12 and masked == sorted(masked, reverse=True)

    class Cancelled(Exception):
        pass

    def cancel(step):
        if step.step == 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        sample_ids(model, random_text(1), num_frames=5, sampler=SamplerConfig(steps=6), generator=gen(0),
                   callback=cancel)
    assert not model.training


def test_sample_images_returns_single_frames():
    model = build_tiny()
    images = sample_images(model, random_text(2), sampler=FAST, generator=gen(0))
    assert images.shape == (2, 3, 8, 8)


def test_cosine_schedule_counts():
    assert num_masked(100, 0, 10) == 100
    assert num_masked(100, 5, 10) == round(100 * math.cos(math.pi / 4))
    assert num_masked(100, 9, 10) >= 1
    assert num_masked(3, 9, 10) == 1


def test_pure_loop_with_a_fake_model_converges_to_the_preferred_tokens():
    target = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])

    def logits_fn(ids, positions):
        return (torch.nn.functional.one_hot(target, 10).float() * 20).gather(
            1, positions[..., None].expand(-1, -1, 10))

    out = sample_tokens(logits_fn, batch=1, num_tokens=8, mask_id=10, config=SamplerConfig(steps=4), device="cpu",
                        generator=gen(0))
    assert torch.equal(out, target)


@pytest.mark.parametrize("schedule", ["fixed", "decay", "increase"])
def test_critic_remasking_resamples_what_the_critic_flags(schedule):
    calls = []

    def logits_fn(ids, positions):
        calls.append(ids.clone())
        return torch.zeros(1, positions.shape[1], 4)

    def critic_fn(ids):  # always flags position 0 as the worst
        return torch.tensor([[100.0, 0, 0, 0, 0, 0]])

    cfg = SamplerConfig(steps=3, remask="critic", critic_noise_schedule=schedule, critic_noise=0.5)
    sample_tokens(logits_fn, batch=1, num_tokens=6, mask_id=4, config=cfg, device="cpu", generator=gen(0),
                  critic_fn=critic_fn)
    assert all(call[0, 0] == 4 for call in calls), "position 0 must be re-masked at every step"


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"),
    (dict(cond_scale=float("nan")), "cond_scale"),
    (dict(cond_scale=-1.0), "cond_scale"),
    (dict(temperature=-0.1), "temperature"),
    (dict(remask="random"), "remask"),
    (dict(critic_noise_schedule="cosine"), "critic_noise_schedule"),
])
def test_sampler_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SamplerConfig(**kwargs)


def test_sample_bad_inputs():
    model = build_tiny()
    with pytest.raises(InputError, match=r"1 \+ k\*2"):
        sample_ids(model, random_text(1), num_frames=8, sampler=FAST)
    with pytest.raises(InputError, match="multiple of 2"):
        sample_ids(model, random_text(1), num_frames=3, prime_ids=torch.zeros(1, 1, 2, 2, dtype=torch.long),
                   sampler=FAST)
    with pytest.raises(InputError, match="at most 20"):
        sample_ids(model, random_text(1), num_frames=11, sampler=FAST)
    with pytest.raises(InputError, match="text-conditioned"):
        sample_ids(model, None, num_frames=5, sampler=FAST)
    with pytest.raises(ConfigError, match="critic"):
        sample_ids(build_tiny(critic=model.config.critic.__class__(kind="none")),
                   random_text(1), num_frames=5, sampler=SamplerConfig(steps=2, remask="critic"))


def test_unconditional_model_samples_without_text():
    from phenaki_core import CriticConfig, MaskGitConfig
    base = build_tiny().config
    model = build_tiny(maskgit=MaskGitConfig(**{**base.maskgit.__dict__, "unconditional": True}),
                       critic=CriticConfig(kind="token", dim=32, depth=1, heads=2, dim_head=16, has_cross_attn=False))
    out = sample_ids(model, None, num_frames=5, batch_size=2, sampler=FAST, generator=gen(0))
    assert out.shape == (2, 3, 2, 2)


def test_gumbel_noise_is_finite_with_the_right_mean():
    from phenaki_core.phenaki import gumbel_noise
    noise = gumbel_noise(torch.Size([200_000]), gen(0), torch.device("cpu"))
    assert torch.isfinite(noise).all()
    assert abs(noise.mean().item() - 0.5772) < 0.01  # Euler-Mascheroni constant



def test_counter_noise_is_uniform_and_keyed_by_seed_step_stream_and_position():
    from phenaki_core.sampling import gumbel_from_keys, position_keys, uniform_noise
    seed = torch.tensor(12345)
    positions = torch.arange(50_000).expand(4, -1)
    u = uniform_noise(position_keys(seed, 0, 1, positions))
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    assert torch.histc(u, bins=10, min=0, max=1).div(u.numel()).sub(0.1).abs().max() < 0.005
    for other in (position_keys(torch.tensor(12346), 0, 1, positions), position_keys(seed, 1, 1, positions),
                  position_keys(seed, 0, 2, positions)):
        assert abs(torch.corrcoef(torch.stack([u.flatten(), uniform_noise(other).flatten()]))[0, 1]) < 0.02
    assert not torch.equal(u[0], u[1]), "rows must get their own noise"
    assert torch.equal(u, uniform_noise(position_keys(seed, 0, 1, positions)))
    gumbel = gumbel_from_keys(position_keys(seed, 3, 1, positions[:, :500]), vocab=64)
    assert gumbel.shape == (4, 500, 64) and torch.isfinite(gumbel).all()
    assert abs(gumbel.mean().item() - 0.5772) < 0.01  # Euler-Mascheroni constant
    # a token's noise depends on its position, not on which other positions are masked with it
    torch.testing.assert_close(gumbel_from_keys(position_keys(seed, 3, 1, positions[:, 7:9]), vocab=64),
                               gumbel[:, 7:9], rtol=0, atol=0)


def test_gumbel_max_with_counter_noise_samples_the_softmax_distribution():
    from phenaki_core.sampling import choose_tokens, position_keys
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0]).log_softmax(-1).expand(1, 40_000, 4)
    ids, log_p = choose_tokens(logits, 1.0, position_keys(torch.tensor(5), 0, 1, torch.arange(40_000)[None]))
    freq = torch.bincount(ids.flatten(), minlength=4).float() / ids.numel()
    torch.testing.assert_close(freq, logits[0, 0].exp(), atol=0.01, rtol=0)
    torch.testing.assert_close(log_p, logits[0, 0][ids])
    greedy, _ = choose_tokens(logits[:, :3], 0.0, position_keys(torch.tensor(5), 0, 1, torch.arange(3)[None]))
    assert greedy.eq(0).all()


@pytest.mark.parametrize("remask", ["confidence", "critic"])
def test_one_sampling_step_traces_as_one_graph_without_breaks(remask):
    """The CPU proxy for CUDA-graph capture: a whole step (the guided model forward, the
    masked-position head, the token choice, the re-mask) traces with fullgraph=True."""
    from phenaki_core.sampling import draw_seed, plan_steps, sampling_step
    model = build_tiny().eval()
    prime = torch.randint(0, 64, (2, 1, 2, 2), generator=gen(1))
    guided = GuidedModel(model, random_text(2), None, prime, (5, 2, 2), 3.0)
    plans = plan_steps(16, SamplerConfig(steps=4))
    seed = draw_seed(gen(0), "cpu")
    ids = torch.full((2, 16), 64)
    positions = torch.arange(16).expand(2, -1)
    critic = guided.critic if remask == "critic" else None

    def step(ids, positions, seed):
        return sampling_step(ids, positions, plans[0], 0, seed, guided.logits, critic, 64)

    torch.compiler.reset()
    compiled = torch.compile(step, fullgraph=True, backend="eager")
    with torch.no_grad():
        for eager, traced in zip(step(ids, positions, seed), compiled(ids, positions, seed)):
            assert torch.equal(eager, traced)
    torch.compiler.reset()

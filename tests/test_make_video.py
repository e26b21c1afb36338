"""Scene chaining: frame accounting (prime 0 included), priming, errors."""

import pytest
import torch

from phenaki_core import InputError, SamplerConfig, make_video, pipeline, sample_ids
from phenaki_core.pipeline import fit_video

from helpers import build_tiny, random_text

FAST = SamplerConfig(steps=2)


def texts(n):
    return [random_text(1, seed=i) for i in range(n)]


@pytest.mark.parametrize("frames, primes, expected_scene_frames", [
    (9, 5, [9, 4, 4]),
    (9, 0, [9, 9, 9]),  # prime 0: no priming, every scene is a fresh 9-frame clip
    (9, [1, 7], [9, 8, 2]),
    ([9, 5, 7], [3, 1], [9, 2, 6]),
])
def test_frame_accounting(frames, primes, expected_scene_frames):
    model = build_tiny()
    story = make_video(model, texts(3), frames, primes, sampler=FAST, generator=torch.Generator().manual_seed(0))
    assert [s.shape[2] for s in story.scenes] == expected_scene_frames
    assert story.video.shape == (1, 3, sum(expected_scene_frames), 8, 8)
    starts = [0]
    for n in expected_scene_frames[:-1]:
        starts.append(starts[-1] + n)
    assert story.boundaries == starts
    assert story.fps == model.config.fps


def test_prime_zero_does_not_condition_on_the_previous_scene():
    model = build_tiny()
    prompts = texts(2)
    story = make_video(model, prompts, 9, 0, sampler=FAST, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    sample_ids(model, prompts[0], num_frames=9, sampler=FAST, generator=g)  # advance like scene 0 did
    alone = model.cvivit.decode_from_ids(sample_ids(model, prompts[1], num_frames=9, sampler=FAST, generator=g))
    assert torch.equal(story.scenes[1], alone)


def test_primed_scene_samples_after_the_reencoded_tail_of_the_previous_scene(monkeypatch):
    model = build_tiny()
    prompts = texts(2)
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("prime_ids"))
        return sample_ids(*args, **kwargs)

    monkeypatch.setattr(pipeline, "sample_ids", spy)
    story = make_video(model, prompts, 9, 5, sampler=FAST, generator=torch.Generator().manual_seed(0))
    assert calls[0] is None
    assert torch.equal(calls[1], model.cvivit.encode_to_ids(story.scenes[0][:, :, -5:]))



@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("remask", ["confidence", "critic"])
def test_a_story_samples_with_half_precision_weights(dtype, remask):
    """`--dtype auto` loads bf16 weights on a GPU: every layer must run in the weights' dtype (a
    float32 table inside a half-precision model, such as the position bias's offsets, fails there)."""
    model = build_tiny().to(dtype)
    conds = [type(t)(t.embeds.to(dtype), t.mask) for t in texts(2)]
    story = make_video(model, conds, 9, 5, sampler=SamplerConfig(steps=2, remask=remask),
                       generator=torch.Generator().manual_seed(0))
    assert story.video.shape == (1, 3, 13, 8, 8)
    assert torch.isfinite(story.video.float()).all()

def test_initial_prime_from_a_users_clip():
    model = build_tiny()
    clip = torch.rand(1, 3, 5, 8, 8)
    story = make_video(model, texts(1), 9, [], sampler=FAST, initial_prime=clip,
                       generator=torch.Generator().manual_seed(0))
    assert story.video.shape[2] == 4


@pytest.mark.parametrize("frames, primes, match", [
    (9, 4, r"0 \(no priming\) or 1 \+ k\*2"),
    (9, 9, "shorter than the scene"),
    (9, -1, ">= 0"),
    (8, 5, r"1 \+ k\*2"),
    (9, [5, 5, 5], "2 prime lengths"),
])
def test_bad_chaining_arguments(frames, primes, match):
    with pytest.raises(InputError, match=match):
        make_video(build_tiny(), texts(3), frames, primes, sampler=FAST)


def test_prime_longer_than_what_came_before_is_refused():
    with pytest.raises(InputError, match="only 5 frames"):
        make_video(build_tiny(), texts(2), [5, 9], [7], sampler=FAST)


def test_fit_video_resizes_short_side_and_centre_crops():
    video = torch.zeros(1, 3, 3, 16, 32)
    video[..., 12:20] = 1  # a vertical stripe in the centre
    out = fit_video(video, 8)
    assert out.shape == (1, 3, 3, 8, 8)
    assert out[..., 3:5].mean() > 0.9 and out[..., 0].max() < 0.1

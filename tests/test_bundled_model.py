"""Guards the shipped model: it loads offline, is small, and makes a non-blank clip on the CPU."""

import torch

from phenaki_core import PhenakiPipeline, SamplerConfig, default_checkpoint, read_metadata
from phenaki_core.evaluation import read_clips


def test_bundled_checkpoint_is_small_and_self_describing():
    path = default_checkpoint()
    assert path.stat().st_size <= 40 * 2**20
    config, text_encoder, extra = read_metadata(path)
    assert text_encoder.name == "all-MiniLM-L6-v2"
    assert [h["stage"] for h in extra["history"]][-1] == "transformer"


def test_bundled_model_generates_a_clip_that_is_not_blank():
    pipe = PhenakiPipeline.from_checkpoint(device="cpu")
    # the default sampler, as `phenaki generate` runs it
    story = pipe.make_video(["a red circle moving right"], num_frames=17, sampler=SamplerConfig(), seed=0)
    video = story.video
    assert video.shape == (1, 3, 17, 64, 64)
    assert torch.isfinite(video).all()
    assert not read_clips(video)[0].blank, "the bundled model drew nothing"

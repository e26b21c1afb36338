"""The Shapes World judge: the contract's "How outputs are judged" reading rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from phenaki_core.data.captions import COLOURS, PALETTE, SHAPES, EvalPrompt, evaluation_prompts
from phenaki_core.data.shapes_world import ShapesWorldConfig, render_clip, render_video
from phenaki_core.errors import InputError
from phenaki_core.evaluation import (ClipReading, chain_continuity, confusion_table, frame_stats, read_clip,
                                     read_clips, score_readings)
from phenaki_core.evaluation.shapes_judge import consistency_scores, frame_consistency

F, S = 17, 64


def _video(shape: str = "square", colour: str = "red", xs=None, ys=None, hs=None) -> torch.Tensor:
    """A clip from explicit geometry; xs/ys/hs are per-frame sequences (defaults: still, centred)."""
    xs = np.full(F, 32.0) if xs is None else np.asarray(xs, dtype=float)
    ys = np.full(len(xs), 32.0) if ys is None else np.asarray(ys, dtype=float)
    hs = np.full(len(xs), 7.0) if hs is None else np.asarray(hs, dtype=float)
    return torch.from_numpy(render_video(shape, colour, np.stack([xs, ys], 1), hs, S))


# ---- shape ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_every_sprite_size_reads_as_its_shape(shape: str) -> None:
    """Static objects at every half-extent the world uses (3.5..14 px), at several sub-pixel
    offsets: the fill ratio must always be nearest to the shape's reference value."""
    for h in np.arange(3.5, 14.01, 0.25):
        for off in (0.0, 0.3, 0.5, 0.8):
            reading = read_clip(_video(shape, xs=[32 + off] * 3, ys=[30 + off / 2] * 3, hs=[h] * 3))
            assert reading.shape == shape, (h, off, reading.fill_ratio)


def test_fill_ratio_reference_values() -> None:
    assert read_clip(_video("square", hs=[9.0] * 3, xs=[32] * 3)).fill_ratio == 1.0
    assert abs(read_clip(_video("circle", hs=[12.0] * 3, xs=[32] * 3)).fill_ratio - math.pi / 4) < 0.03
    assert abs(read_clip(_video("triangle", hs=[12.0] * 3, xs=[32] * 3)).fill_ratio - 0.5) < 0.03


# ---- colour ---------------------------------------------------------------------------------

@pytest.mark.parametrize("colour", COLOURS)
def test_colour_nearest_palette_even_with_noise(colour: str) -> None:
    video = _video("circle", colour)
    noisy = (video + 0.04 * torch.randn(video.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    noisy = torch.where(video.amax(0, keepdim=True) > 0, noisy, torch.zeros(()))  # keep background black
    assert read_clip(noisy).colour == colour


def test_colour_is_majority_over_all_frames() -> None:
    big = _video("square", "blue", hs=[10.0] * F)
    small = _video("square", "yellow", xs=[10.0] * F, ys=[10.0] * F, hs=[3.0] * F)
    reading = read_clip(torch.maximum(big, small))
    assert reading.colour == "blue" and 0.85 < reading.colour_share < 1.0


def test_dim_pixels_are_not_object_pixels() -> None:
    video = _video("square", "white")
    dim = torch.full_like(video, 60 / 255)  # exactly 60 is *not* above 60
    reading = read_clip(torch.maximum(video, dim))
    assert reading.shape == "square" and reading.colour == "white"
    assert read_clip(torch.full((3, F, S, S), 61 / 255)).shape == "square"  # whole frame is one object


# ---- motion ---------------------------------------------------------------------------------

@pytest.mark.parametrize("motion, xs, ys", [
    ("moving right", np.linspace(15, 49, F), None),
    ("moving left", np.linspace(49, 15, F), None),
    ("moving up", None, np.linspace(49, 15, F)),      # y decreases: up on screen
    ("moving down", None, np.linspace(15, 49, F)),
    ("standing still", np.linspace(30, 35, F), None),  # 5 px < 10% of 64
    ("moving right", np.linspace(20, 40, F), np.linspace(30, 40, F)),  # dominant axis wins
    ("moving up", np.linspace(30, 36, F), np.linspace(45, 20, F)),
])
def test_motion_direction_rules(motion: str, xs, ys) -> None:
    xs = np.full(F, 32.0) if xs is None else xs
    assert read_clip(_video("circle", xs=xs, ys=ys)).motion == motion


def test_growing_and_shrinking_use_area_ratio_before_displacement() -> None:
    grow = read_clip(_video("triangle", hs=np.linspace(5, 9, F)))
    assert grow.motion == "growing" and grow.area_ratio > 1.5
    shrink = read_clip(_video("circle", hs=np.linspace(9, 5, F), xs=np.linspace(20, 44, F)))
    assert shrink.motion == "shrinking" and shrink.area_ratio < 0.67
    mild = read_clip(_video("square", hs=np.linspace(7, 8, F)))  # ratio ~1.3: not growing
    assert mild.motion == "standing still"


def test_absent_frames_are_skipped() -> None:
    video = _video("square", xs=np.linspace(15, 49, F)).clone()
    video[:, 0] = 0
    video[:, 7:9] = 0
    video[:, -1] = 0
    reading = read_clip(video)
    assert not reading.blank and reading.motion == "moving right"
    assert (reading.first_frame, reading.last_frame) == (1, F - 2)
    assert np.isnan(frame_stats(video).fills[7])


# ---- blank clips ----------------------------------------------------------------------------

def test_blank_detection() -> None:
    empty = read_clip(torch.zeros(3, F, S, S))
    assert empty.blank and empty.attributes() == (None, None, None)
    assert math.isnan(empty.fill_ratio) and empty.present_fraction == 0.0
    mostly_empty = _video("circle").clone()
    mostly_empty[:, 4:] = 0  # object in 4 of 17 frames
    assert read_clip(mostly_empty).blank
    assert not read_clip(mostly_empty, min_present_fraction=0.2).blank


# ---- input handling -------------------------------------------------------------------------

def test_accepts_batches_uint8_and_numpy() -> None:
    clips = [render_clip(i, ShapesWorldConfig(continuation_prob=0.0)) for i in range(3)]
    batch = torch.stack([c.video for c in clips])                             # (b, c, f, h, w)
    before = batch.clone()
    readings = read_clips(batch)
    assert torch.equal(batch, before)  # the judge never writes into its input
    assert [r.attributes() for r in readings] == [(c.colour, c.shape, c.motion) for c in clips]
    assert read_clips(clips[0].video)[0] == readings[0]
    as_uint8 = (batch[0] * 255).round().to(torch.uint8)
    assert read_clip(as_uint8) == readings[0]
    fhwc = as_uint8.permute(1, 2, 3, 0).numpy()                               # (f, h, w, c)
    assert read_clip(fhwc) == readings[0]
    assert read_clip(fhwc.astype(np.float32) / 255).attributes() == readings[0].attributes()
    assert read_clip(batch[0].double()) == readings[0]


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(3, 64, 64), "c=3, f, h, w"),
    (torch.zeros(4, F, 8, 8), "c=3, f, h, w"),
    (torch.zeros(2, 3, F, 8, 8), "read_clips"),
    (torch.full((3, F, 8, 8), -0.5), "\\[-1, 1\\]"),
    (torch.full((3, F, 8, 8), 200.0), "0..255"),
    (torch.full((3, F, 8, 8), float("nan")), "NaN"),
    (np.zeros((F, 8, 8, 4), dtype=np.uint8), "f, h, w, c=3"),
    (np.zeros((F, 8, 8, 3), dtype=np.int32), "dtype"),
    ([[0.0]], "torch.Tensor or numpy"),
])
def test_input_validation(bad, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_clip(bad)


def test_small_float_overshoot_is_tolerated() -> None:
    video = _video("square") * 1.0005
    assert read_clip(video).shape == "square"


# ---- scores and chains ----------------------------------------------------------------------

def _reading(colour, shape, motion) -> ClipReading:
    nan2 = (math.nan, math.nan)
    return ClipReading(colour, shape, motion, colour is None, 1.0, 1.0, 1.0, 0, 0, 1.0, 1.0, 1.0,
                       nan2, nan2, nan2, 0.0)


def test_score_readings_fractions() -> None:
    readings = [_reading("red", "circle", "growing"), _reading("red", "square", "growing"),
                _reading("blue", "square", "moving up"), _reading(None, None, None)]
    targets = [("red", "circle", "growing"), EvalPrompt("x", "red", "circle", "growing"),
               ("a blue square moving up", "blue", "square", "moving left"), ("red", "circle", "growing")]
    scores = score_readings(readings, targets)
    assert scores == {"colour": 0.75, "shape": 0.5, "motion": 0.5, "all_three": 0.25,
                      "blank": 0.25, "n": 4.0}
    with pytest.raises(ValueError, match="targets"):
        score_readings(readings, targets[:2])


def test_confusion_table_counts_what_each_request_was_read_as() -> None:
    table = confusion_table(["circle", "square", "circle", "circle"], ["circle", "circle", "blank", "circle"])
    assert table == {"circle": {"circle": 2, "blank": 1}, "square": {"circle": 1}}
    assert list(table) == ["circle", "square"] and list(table["circle"]) == ["circle", "blank"]
    with pytest.raises(ValueError):
        confusion_table(["circle"], [])


def test_generated_clips_score_perfectly_against_eval_prompts() -> None:
    prompts = evaluation_prompts()[:21]
    cfg = ShapesWorldConfig(continuation_prob=0.0)
    videos = [render_clip(i, cfg, colour=p.colour, shape=p.shape, motion=p.motion).video
              for i, p in enumerate(prompts)]
    scores = score_readings(read_clips(torch.stack(videos)), prompts)
    assert scores["all_three"] == 1.0 and scores["blank"] == 0.0


def test_chain_continuity() -> None:
    clip = render_clip(4, ShapesWorldConfig(), motion="moving down", prev_motion="moving right")
    p = clip.prime_frames
    smooth = chain_continuity(clip.video[:, :p], clip.video[:, p:])
    assert 0 < smooth < 4 / 64
    # A scene that starts with the p copied prime frames: skip them.
    assert chain_continuity(clip.video[:, :p], clip.video, first_new_frame=p) == smooth
    a = _video("square", xs=[20.0] * 3)
    b = _video("square", xs=[52.0] * 3)
    assert abs(chain_continuity(a, b) - 32 / 64) < 1e-6
    assert math.isnan(chain_continuity(a, torch.zeros_like(b)))
    with pytest.raises(ValueError, match="first_new_frame"):
        chain_continuity(a, b, first_new_frame=3)


def test_palette_matches_contract_table() -> None:
    assert PALETTE == {
        "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220),
        "yellow": (230, 210, 40), "purple": (150, 60, 200), "orange": (240, 130, 30),
        "white": (235, 235, 235), "cyan": (40, 200, 210)}


def test_every_shape_has_a_reference_fill_ratio():
    from phenaki_core.data.captions import SHAPES
    from phenaki_core.evaluation.shapes_judge import SHAPE_FILL
    assert set(SHAPE_FILL) == set(SHAPES)


# ---- per-frame consistency --------------------------------------------------------------------

def test_a_clean_clip_holds_together_frame_by_frame() -> None:
    for shape in SHAPES:
        found = frame_consistency(_video(shape, xs=np.linspace(16, 48, F)))
        assert found.frame_shapes == (shape,) * F and found.frame_colours == ("red",) * F
        assert not found.frame0_differs and not found.morphs and found.shape_changes == 0
        assert found.stray_per_frame == 0.0 and found.halo_per_frame == 0.0


def test_a_first_frame_of_another_shape_or_colour_is_caught() -> None:
    clip = _video("circle")
    clip[:, :1] = _video("triangle")[:, :1]
    found = frame_consistency(clip)
    assert found.frame0_differs and found.frame_shapes[0] == "triangle" and not found.morphs
    recoloured = _video("circle")
    recoloured[:, :1] = _video("circle", colour="blue")[:, :1]
    assert frame_consistency(recoloured).frame0_differs
    empty_first = _video("circle")
    empty_first[:, :1] = 0
    assert frame_consistency(empty_first).frame0_differs


def test_a_clip_morphs_when_more_than_three_frames_change_shape() -> None:
    for changed, morphs in ((3, False), (4, True)):
        clip = _video("square")
        clip[:, 5:5 + changed] = _video("circle")[:, 5:5 + changed]
        found = frame_consistency(clip)
        assert found.shape_changes == changed and found.morphs is morphs and not found.frame0_differs


def test_stray_and_halo_pixels_are_counted() -> None:
    clip = _video("square")                    # the object spans x, y 25..38
    clip[:, :, 2, 2] = 0.9                     # one bright pixel far from it, in every frame
    clip[:, :, 39, 30] = 0.9                   # one touching it: part of the object
    clip[0, :, 60, 60] = 0.15                  # one dim red pixel on the background (38 on 0..255)
    found = frame_consistency(clip)
    assert found.stray_per_frame == 1.0 and found.halo_per_frame == 1.0  # bright pixels are object, not halo
    assert found.frame_shapes[0] == "triangle"  # the stray pixel stretches the box: why strays matter
    scores = consistency_scores(torch.stack([clip, _video("circle")]))
    assert scores["clips_with_stray"] == 0.5 and scores["stray_pixels_per_frame"] == 0.5 and scores["n"] == 2
    with pytest.raises(InputError):
        consistency_scores([])

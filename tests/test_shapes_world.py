"""Shapes World generator and captions: the contract in docs/shapes_world.md."""

from __future__ import annotations

import re
import time
from collections import Counter

import numpy as np
import pytest
import torch

from phenaki_core.data import captions as cap
from phenaki_core.data import training_caption
from phenaki_core.data.captions import (COLOURS, MOTIONS, PALETTE, SHAPES, canonical_caption,
                                        evaluation_prompts, evaluation_stories, parse_caption)
from phenaki_core.data.shapes_world import (SIZE_LIMITS, ShapesWorldConfig, ShapesWorldDataset,
                                            render_clip, render_video)
from phenaki_core.evaluation.shapes_judge import read_clip

CFG = ShapesWorldConfig()


def _object_mask(video: torch.Tensor) -> torch.Tensor:
    """(c, f, h, w) -> (f, h, w) bool, the contract's object-pixel rule."""
    return (video * 255).amax(dim=0) > 60


# ---- determinism ----------------------------------------------------------------------------

def test_same_seed_same_clip_and_different_seeds_differ() -> None:
    a, b = render_clip(123, CFG), render_clip(123, CFG)
    assert torch.equal(a.video, b.video) and a.caption == b.caption and a.prev_motion == b.prev_motion
    c = render_clip(np.random.default_rng(123), CFG)
    assert torch.equal(a.video, c.video)
    videos = [render_clip(s, CFG).video for s in range(8)]
    assert all(not torch.equal(videos[0], v) for v in videos[1:])


def test_fixing_one_attribute_keeps_the_other_draws() -> None:
    free = render_clip(7, CFG, continuation=False)
    fixed = render_clip(7, CFG, colour="cyan" if free.colour != "cyan" else "red", continuation=False)
    assert (fixed.shape, fixed.motion) == (free.shape, free.motion)
    np.testing.assert_array_equal(fixed.centers, free.centers)


def test_dataset_deterministic_per_index_and_epoch() -> None:
    ds = ShapesWorldDataset(CFG, seed=5, length=100)
    x, y = ds[3], ds[3]
    assert torch.equal(x["video"], y["video"]) and x["caption"] == y["caption"]
    assert not torch.equal(ds[3]["video"], ds[4]["video"])
    assert torch.equal(ds[-1]["video"], ds[99]["video"])
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["video"], x["video"])
    ds.set_epoch(0)
    assert torch.equal(ds[3]["video"], x["video"])
    assert not torch.equal(ShapesWorldDataset(CFG, seed=6)[3]["video"], x["video"])
    with pytest.raises(IndexError):
        ds[100]


def test_dataloader_with_workers_matches_direct_indexing() -> None:
    ds = ShapesWorldDataset(ShapesWorldConfig(image_size=32, num_frames=9), seed=1, length=8)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    assert batches[0]["video"].shape == (4, 3, 9, 32, 32)
    assert torch.equal(batches[1]["video"][2], ds[6]["video"])
    assert batches[1]["caption"][2] == ds[6]["caption"]
    assert isinstance(batches[0]["prime_frames"], torch.Tensor)  # collate-friendly (no None)


# ---- rendering ------------------------------------------------------------------------------

def test_video_format_and_exact_palette() -> None:
    for colour in COLOURS:
        clip = render_clip(11, CFG, colour=colour)
        video = clip.video
        assert video.dtype == torch.float32 and video.shape == (3, 17, 64, 64)
        assert float(video.min()) == 0.0 and float(video.max()) <= 1.0
        expected = torch.tensor([np.float32(v) / np.float32(255.0) for v in PALETTE[colour]])
        mask = (video > 0).any(dim=0)                                            # (f, h, w)
        assert mask.any() and not video[:, ~mask].any()                          # black background
        assert torch.equal(video[:, mask], expected[:, None].expand(3, int(mask.sum())))  # flat, exact


def test_every_colour_shape_motion_is_rendered_and_read_back() -> None:
    """All 168 combinations, read back by the judge with the contract's rules."""
    wrong = []
    for i, (colour, shape, motion) in enumerate(
            (c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS):
        clip = render_clip(1000 + i, CFG, colour=colour, shape=shape, motion=motion, continuation=False)
        reading = read_clip(clip.video)
        if reading.attributes() != (colour, shape, motion):
            wrong.append(((colour, shape, motion), reading.attributes()))
    assert not wrong, wrong[:5]


def test_judge_reads_random_dataset_clips() -> None:
    ds = ShapesWorldDataset(ShapesWorldConfig(continuation_prob=0.0), seed=2024)
    wrong = [(c.colour, c.shape, c.motion) for c in map(ds.clip, range(150))
             if read_clip(c.video).attributes() != (c.colour, c.shape, c.motion)]
    assert not wrong, wrong[:5]


@pytest.mark.parametrize("size", [32, 128])
def test_other_resolutions_scale_and_read_back(size: int) -> None:
    cfg = ShapesWorldConfig(image_size=size, continuation_prob=0.0)
    for i in range(14):
        clip = render_clip(i, cfg, motion=MOTIONS[i % len(MOTIONS)])
        assert clip.video.shape == (3, 17, size, size)
        assert read_clip(clip.video).attributes() == (clip.colour, clip.shape, clip.motion)


def test_object_fully_inside_frame_and_motion_parameters() -> None:
    ds = ShapesWorldDataset(CFG, seed=9)
    for i in range(200):
        clip = ds.clip(i)
        mask = _object_mask(clip.video)                                        # (f, h, w)
        assert mask.flatten(1).any(1).all(), "object missing in a frame"
        border = mask[:, 0, :].any() | mask[:, -1, :].any() | mask[:, :, 0].any() | mask[:, :, -1].any()
        assert not border, f"clip {i} touches the border"
        h, c = clip.half_extents, clip.centers
        p = max(clip.prime_frames, 1)
        assert (c - h[:, None] >= 0).all() and (c + h[:, None] <= 64).all()
        segments = [(clip.motion, slice(p - 1, None), True)]                  # captioned part
        if clip.prev_motion is not None:
            segments.append((clip.prev_motion, slice(0, p), False))         # primed part
        for motion, seg, captioned in segments:
            steps = np.diff(c[seg], axis=0)
            speed = np.linalg.norm(steps, axis=1)
            assert SIZE_LIMITS[0] - 1e-6 <= h[seg].min() and h[seg].max() <= SIZE_LIMITS[1] + 1e-6
            if motion.startswith("moving"):
                assert np.all((speed >= 1.0 - 1e-9) & (speed <= 2.5 + 1e-9)), (motion, speed)
                assert np.allclose(steps, steps[0])                                 # constant velocity
            else:
                assert np.all(speed == 0), motion
            if motion in ("growing", "shrinking"):
                if captioned:  # changes by >= 40% (1.5x planned) over the captioned part
                    ratio = h[seg][-1] / h[seg][0]
                    assert ratio >= 1.4 if motion == "growing" else ratio <= 1 / 1.4, ratio
            else:
                assert np.all(h[seg] == h[seg][0])
        if clip.prev_motion is None and clip.motion not in ("growing", "shrinking"):
            assert 5 <= h[0] <= 10


def test_standing_still_moves_less_than_one_pixel() -> None:
    clip = render_clip(3, CFG, motion="standing still", continuation=False)
    mask = _object_mask(clip.video)
    assert all(torch.equal(mask[0], m) for m in mask[1:])


# ---- continuation clips ---------------------------------------------------------------------

def test_continuation_clips_are_continuous_and_caption_motion_b() -> None:
    cfg = ShapesWorldConfig(continuation_prob=1.0, paraphrase_prob=1.0, typed_share=0.0)  # typos do not parse
    ds = ShapesWorldDataset(cfg, seed=77)
    seen_pairs = set()
    for i in range(120):
        clip = ds.clip(i)
        p = clip.prime_frames
        assert p == cfg.prime_frames and clip.prev_motion in MOTIONS and clip.prev_motion != clip.motion
        seen_pairs.add((clip.prev_motion, clip.motion))
        # Continuous geometry: the step into frame p is an ordinary motion-B step.
        c, h = clip.centers, clip.half_extents
        assert np.linalg.norm(c[p] - c[p - 1]) <= 2.5 + 1e-9
        assert abs(h[p] - h[p - 1]) <= 14 / 16
        # In pixels: centroid jump at the boundary stays small.
        mask = _object_mask(clip.video).float()
        ys, xs = torch.arange(64.0)[:, None], torch.arange(64.0)[None, :]
        cent = torch.stack([(mask * xs).sum((1, 2)), (mask * ys).sum((1, 2))], 1) / mask.sum((1, 2))[:, None]
        assert float((cent[p] - cent[p - 1]).norm()) <= 4.0
        # Caption: motion B only; the judge reads motion B from the frames after the prime.
        parsed = parse_caption(clip.caption)
        assert parsed == (clip.colour, clip.shape, clip.motion), clip.caption
        assert clip.canonical == canonical_caption(clip.colour, clip.shape, clip.motion)
        assert read_clip(clip.video[:, p:]).attributes() == (clip.colour, clip.shape, clip.motion)
    assert len(seen_pairs) > 25


def test_explicit_prev_motion() -> None:
    clip = render_clip(1, CFG, motion="moving up", prev_motion="moving right")
    assert clip.prev_motion == "moving right" and clip.prime_frames == 5
    steps = np.diff(clip.centers, axis=0)
    assert np.all(steps[:4, 0] > 0) and np.all(steps[:4, 1] == 0)
    assert np.all(steps[4:, 1] < 0) and np.all(steps[4:, 0] == 0)
    assert "right" not in clip.canonical
    plain = render_clip(1, CFG, continuation=False)
    assert plain.prev_motion is None and plain.prime_frames == 0
    with pytest.raises(ValueError):
        render_clip(1, CFG, prev_motion="moving right", continuation=False)


def test_continuation_fraction_follows_config() -> None:
    ds = ShapesWorldDataset(ShapesWorldConfig(image_size=16, num_frames=9, continuation_prob=0.3), seed=0)
    share = np.mean([ds.clip(i).prev_motion is not None for i in range(400)])
    assert 0.22 < share < 0.38


# ---- captions -------------------------------------------------------------------------------

def _captions(n: int, prob: float, seed: int = 0) -> list[tuple[str, tuple[str, str, str]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        attrs = (COLOURS[rng.integers(8)], SHAPES[rng.integers(3)], MOTIONS[rng.integers(7)])
        out.append((training_caption(*attrs, rng, prob), attrs))
    return out


def test_canonical_caption_form() -> None:
    assert canonical_caption("red", "circle", "moving right") == "a red circle moving right"
    assert canonical_caption("cyan", "square", "standing still") == "a cyan square standing still"
    with pytest.raises(ValueError, match="unknown shape"):
        canonical_caption("red", "hexagon", "growing")


def test_paraphrases_are_used_and_parse_back() -> None:
    caps = _captions(3000, 1.0)
    text = " | ".join(c for c, _ in caps)
    for word in ("ball", "disc", "box", "block", "heading left", "slides to the left",
                 "getting bigger", "not moving", "stays still", "the", "that is",
                 "crimson", "navy", "turquoise", "sphere", "sinking", "expanding", r"in \w+, \w+",
                 r"an (orange|amber|emerald)"):
        assert re.search(rf"\b{word}\b", text), word
    assert len({c for c, _ in caps}) > 1500
    for caption, attrs in caps:
        assert parse_caption(caption) == attrs, caption
    canon = _captions(2000, 0.5, seed=1)
    share = np.mean([c == canonical_caption(*a) for c, a in canon])
    assert 0.45 < share < 0.62  # 0.5 canonical + paraphrases that happen to be canonical
    assert all(c == canonical_caption(*a) for c, a in _captions(200, 0.0))


def test_heldout_paraphrases_never_generated() -> None:
    vocab = cap.all_training_phrases()
    for phrases in cap.HELDOUT_COLOUR_SYNONYMS.values():
        assert not set(phrases) & vocab["colour"]
    for phrases in cap.HELDOUT_SHAPE_SYNONYMS.values():
        assert not set(phrases) & vocab["shape"]
    for phrases in cap.HELDOUT_MOTION_PHRASES.values():
        assert not set(phrases) & vocab["motion"]
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, cap.HELDOUT_WORDS)) + r")\b")
    every = [c for c, _ in _captions(5000, 1.0, seed=3)]
    every += [render_clip(s, ShapesWorldConfig(image_size=16, num_frames=3, prime_frames=1)).caption
              for s in range(200)]
    offenders = [c for c in every if pattern.search(c)]
    assert not offenders, offenders[:5]
    # ... and every held-out phrase contains at least one held-out word.
    for table in (cap.HELDOUT_COLOUR_SYNONYMS, cap.HELDOUT_SHAPE_SYNONYMS, cap.HELDOUT_MOTION_PHRASES):
        for phrase in (p for ps in table.values() for p in ps):
            assert pattern.search(phrase), phrase


def test_motion_phrases_do_not_overlap_between_motions() -> None:
    tables = [cap.MOTION_PARTICIPLES, cap.MOTION_VERBS, cap.HELDOUT_MOTION_PHRASES]
    phrases = [(p, m) for t in tables for m, ps in t.items() for p in ps]
    for p, m in phrases:
        for q, n in phrases:
            if m != n:
                assert not re.search(rf"\b{re.escape(p)}\b", q), (p, q)


def test_colour_shape_and_motion_wordings_never_contain_each_other() -> None:
    # "brick red" would also name a square: a caption must name each attribute once
    vocab = cap.all_training_phrases()
    for held, kind in ((cap.HELDOUT_COLOUR_SYNONYMS, "colour"), (cap.HELDOUT_SHAPE_SYNONYMS, "shape"),
                       (cap.HELDOUT_MOTION_PHRASES, "motion")):
        vocab[kind] = vocab[kind] | {p for ps in held.values() for p in ps}
    for kind, phrases in vocab.items():
        for other, others in vocab.items():
            if kind != other:
                for p in phrases:
                    clash = [q for q in others if re.search(rf"\b{re.escape(p)}\b", q)]
                    assert not clash, (kind, p, other, clash)


def test_evaluation_prompts_cover_everything_and_are_fixed() -> None:
    canonical = evaluation_prompts()
    assert canonical == evaluation_prompts() and len(canonical) == 42
    assert {p.colour for p in canonical} == set(COLOURS)
    assert Counter((p.shape, p.motion) for p in canonical) == Counter(
        {(s, m): 2 for s in SHAPES for m in MOTIONS})
    assert max(Counter(p.colour for p in canonical).values()) <= 6
    assert all(p.prompt == canonical_caption(p.colour, p.shape, p.motion) for p in canonical)

    shades = evaluation_prompts("shades")
    assert [p[1:] for p in shades] == [p[1:] for p in canonical]
    training_shades = cap.all_training_phrases()["colour"] - set(COLOURS)
    for p in shades:
        assert parse_caption(p.prompt) == p[1:], p.prompt
        assert any(re.search(rf"\b{re.escape(w)}\b", p.prompt) for w in training_shades), p.prompt
    assert len({p.prompt for p in shades}) == 42

    heldout = evaluation_prompts("heldout")
    assert [p[1:] for p in heldout] == [p[1:] for p in canonical]
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, cap.HELDOUT_WORDS)) + r")\b")
    for p in heldout:
        assert len(pattern.findall(p.prompt)) >= 3, p.prompt  # held-out shade, noun and motion
        assert parse_caption(p.prompt) == p[1:], p.prompt
    assert len({p.prompt for p in heldout}) == 42
    with pytest.raises(ValueError):
        evaluation_prompts("other")  # type: ignore[arg-type]

    stories = evaluation_stories()
    assert stories == evaluation_stories() and len(stories) >= 4
    for story in stories:
        assert len({(s.colour, s.shape) for s in story}) == 1
        assert all(a.motion != b.motion for a, b in zip(story, story[1:]))


# ---- config ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"num_frames": 16}, "num_frames must be 1 \\+ k"),
    ({"num_frames": 1}, "num_frames"),
    ({"prime_frames": 4}, "prime_frames"),
    ({"prime_frames": 17}, "prime_frames"),
    ({"image_size": 8}, "image_size must be >= 16"),
    ({"image_size": 64.0}, "image_size must be a positive integer"),
    ({"continuation_prob": 1.5}, "continuation_prob"),
    ({"paraphrase_prob": -0.1}, "paraphrase_prob"),
    ({"fps": 0}, "fps"),
    ({"num_frames": 45}, "too long"),
    ({"temporal_patch": 4, "num_frames": 17, "prime_frames": 3}, "prime_frames"),
])
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ShapesWorldConfig(**kwargs)


def test_config_accepts_other_patch_rules() -> None:
    cfg = ShapesWorldConfig(num_frames=13, temporal_patch=4, prime_frames=5)
    clip = render_clip(0, cfg, continuation=True)
    assert clip.video.shape[1] == 13 and clip.prime_frames == 5


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown colour"):
        render_clip(0, CFG, colour="magenta")
    with pytest.raises(ValueError, match="unknown motion"):
        render_clip(0, CFG, motion="spinning")
    with pytest.raises(ValueError, match="seed"):
        render_clip(-1, CFG)
    with pytest.raises(ValueError, match="length"):
        ShapesWorldDataset(CFG, length=0)
    with pytest.raises(ValueError, match="unknown shape"):
        render_video("hexagon", "red", np.zeros((2, 2)) + 32, np.full(2, 5.0), 64)


# ---- speed ----------------------------------------------------------------------------------

def test_generation_speed_regression_guard() -> None:
    ds = ShapesWorldDataset(CFG, seed=0)
    ds[0]
    n = 100
    start = time.perf_counter()
    for i in range(n):
        ds[i]
    per_clip = (time.perf_counter() - start) / n
    assert per_clip < 0.05, f"{per_clip * 1e3:.2f} ms per 17x64x64 clip"


def test_sprite_geometry() -> None:
    """Square fills its box; circle is symmetric; triangle is upright, apex up, ~equilateral."""
    for w in range(7, 29):
        h = w / 2
        for shape in SHAPES:
            video = render_video(shape, "white", np.array([[32.3, 31.6]]), np.array([h]), 64)
            mask = torch.from_numpy(video[0, 0] > 0)
            rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
            box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            assert box.shape[1] == w and rows.numel() == box.shape[0] and cols.numel() == w
            if shape == "square":
                assert box.all()
            elif shape == "circle":
                assert box.shape[0] == w and torch.equal(box, box.T) and torch.equal(box, box.flip(0))
            else:
                assert box.shape[0] == round(w * np.sqrt(3) / 2)
                widths = box.sum(1)
                assert widths[0] <= 2 and widths[-1] == w and bool((widths.diff() >= 0).all())
                assert torch.equal(box, box.flip(1))

"""A judge for Shapes World clips, implementing the contract's "How outputs are judged" rules.

Reading rules (docs/shapes_world.md):

* object pixels: the largest channel is above 60 (on 0..255);
* colour: each object pixel goes to the nearest palette colour; majority over all frames;
* shape: median over frames of (object pixels / bounding-box area): ~1.0 square, ~0.79 circle,
  ~0.5 triangle (nearest wins);
* motion: area ratio last/first frame > 1.5 growing, < 0.67 shrinking; else centroid
  displacement (last - first) under 10% of the width is still; else the dominant axis and its
  sign (image y grows downward, so decreasing y is "moving up");
* chain continuity: centroid jump between the last frame of one scene and the first new frame
  of the next, as a fraction of the width.

Per-frame consistency (:func:`frame_consistency`): each frame is read on its own (colour by the
majority of its object pixels, shape by its own fill ratio). A clip's first frame *differs* when
it is empty or its colour or shape is not the majority of the other frames'; a clip *morphs*
when more than ``MORPH_FRAMES`` frames read as another shape than the clip. *Stray* pixels are
object pixels more than ``STRAY_DISTANCE`` pixels from the frame's largest connected object;
*halo* pixels are visible colour on the background (largest channel above ``HALO_THRESHOLD``,
at most the object threshold). A clean Shapes World clip has none of either.

Frames without object pixels are skipped ("first"/"last" mean the first/last frames where the
object is visible); a clip with the object in fewer than ``min_present_fraction`` of its frames
is read as blank.

Inputs: torch float tensors (c, f, h, w) or (b, c, f, h, w) in [0, 1], torch uint8 in 0..255,
or numpy arrays laid out (f, h, w, c) (uint8 0..255 or float 0..1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..data.captions import COLOURS, PALETTE, SHAPES
from ..errors import InputError

OBJECT_THRESHOLD = 60.0                      # on 0..255
SHAPE_FILL: dict[str, float] = {"square": 1.0, "circle": math.pi / 4.0, "triangle": 0.5}
GROWING_RATIO = 1.5
SHRINKING_RATIO = 0.67
STILL_FRACTION = 0.1
RANGE_TOLERANCE = 1e-3                       # float inputs may overshoot [0, 1] by this much
MORPH_FRAMES = 3                             # a clip morphs when more frames than this read as another shape
STRAY_DISTANCE = 2                           # pixels (Chebyshev) from the main object
HALO_THRESHOLD = 24.0                        # on 0..255: visible on black, below the object threshold

_PALETTE_255 = np.asarray([PALETTE[c] for c in COLOURS], dtype=np.float32)  # (8, 3)


@dataclass(frozen=True)
class ClipReading:
    """What the judge reads from one clip. Attributes are None when ``blank``.

    Raw numbers (pixels, frame indices within the clip; NaN when unavailable):
    present_fraction: share of frames with object pixels; colour_share: share of object pixels
    voting for the winning colour; fill_ratio: median object/bbox ratio; first_frame/last_frame:
    first/last frame with the object; area_first/area_last/area_ratio; centroid_first/
    centroid_last as (x, y); displacement as (dx, dy) = last - first; displacement_frac:
    |displacement| / width.
    """

    colour: str | None
    shape: str | None
    motion: str | None
    blank: bool
    present_fraction: float
    colour_share: float
    fill_ratio: float
    first_frame: int
    last_frame: int
    area_first: float
    area_last: float
    area_ratio: float
    centroid_first: tuple[float, float]
    centroid_last: tuple[float, float]
    displacement: tuple[float, float]
    displacement_frac: float

    def attributes(self) -> tuple[str | None, str | None, str | None]:
        return self.colour, self.shape, self.motion


@dataclass(frozen=True)
class FrameStats:
    """Per-frame measurements of one clip (f frames); NaN where the object is absent."""

    areas: np.ndarray       # (f,) object pixel counts
    centroids: np.ndarray   # (f, 2) as (x, y) in pixel indices
    fills: np.ndarray       # (f,) object pixels / bounding-box area
    width: int


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------

def _float_to_255(x: np.ndarray) -> np.ndarray:
    """Validate a float array in [0, 1] (small overshoot tolerated) and scale it to 0..255."""
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # min/max propagate NaN and inf
        raise InputError("video contains NaN or infinite values")
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        hint = " (looks like [-1, 1]: map it with (x + 1) / 2)" if lo < -0.05 else ""
        hint = hint or (" (looks like 0..255: divide by 255 or pass uint8)" if hi > 2.0 else "")
        raise InputError(f"float video values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]{hint}")
    x = np.clip(x, 0.0, 1.0, dtype=np.float32)
    x *= np.float32(255.0)
    return x


def _to_cfhw255(video: Any) -> np.ndarray:
    """One clip as contiguous float32 (3, f, h, w) on the 0..255 scale."""
    if isinstance(video, torch.Tensor):
        if video.dim() == 5:
            raise InputError("got a batch (b, c, f, h, w); use read_clips for batches")
        if video.dim() != 4 or video.shape[0] != 3:
            raise InputError(f"a torch video must be (c=3, f, h, w), got shape {tuple(video.shape)}")
        if video.dtype != torch.uint8 and not video.is_floating_point():
            raise InputError(f"unsupported video dtype {video.dtype}; use float in [0, 1] or uint8")
        x = video.detach().to("cpu")
        x = x if x.dtype == torch.uint8 else x.float()
        array = x.numpy()                                         # (c, f, h, w)
    elif isinstance(video, np.ndarray):
        if video.ndim != 4 or video.shape[-1] != 3:
            raise InputError(f"a numpy video must be (f, h, w, c=3), got shape {video.shape}")
        if video.dtype != np.uint8 and not np.issubdtype(video.dtype, np.floating):
            raise InputError(f"unsupported video dtype {video.dtype}; use float in [0, 1] or uint8")
        array = video.transpose(3, 0, 1, 2)                       # (c, f, h, w)
    else:
        raise InputError(f"video must be a torch.Tensor or numpy array, got {type(video).__name__}")
    if min(array.shape[1:]) < 1:
        raise InputError(f"video has an empty dimension: (f, h, w) = {array.shape[1:]}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array, dtype=np.float32)
    return _float_to_255(np.ascontiguousarray(array))


def frame_stats(video: Any) -> FrameStats:
    """Areas, centroids and fill ratios per frame (see :class:`FrameStats`)."""
    return _frame_stats(_object_mask(_to_cfhw255(video)))


def _object_mask(arr: np.ndarray) -> np.ndarray:
    """(3, f, h, w) on 0..255 -> bool (f, h, w): largest channel above the threshold."""
    return np.maximum(np.maximum(arr[0], arr[1]), arr[2]) > OBJECT_THRESHOLD


def _frame_stats(mask: np.ndarray) -> FrameStats:
    f, h, w = mask.shape
    areas = mask.sum(axis=(1, 2)).astype(np.float64)                # (f,)
    rows, cols = mask.any(axis=2), mask.any(axis=1)                 # (f, h), (f, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = (mask.sum(axis=2) * np.arange(h)).sum(axis=1) / areas
        cx = (mask.sum(axis=1) * np.arange(w)).sum(axis=1) / areas
        bbox_h = h - np.argmax(rows[:, ::-1], axis=1) - np.argmax(rows, axis=1)
        bbox_w = w - np.argmax(cols[:, ::-1], axis=1) - np.argmax(cols, axis=1)
        fills = areas / (bbox_h * bbox_w)
    present = areas > 0
    fills = np.where(present, fills, np.nan)
    centroids = np.where(present[:, None], np.stack([cx, cy], axis=1), np.nan)
    return FrameStats(areas=areas, centroids=centroids, fills=fills, width=w)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def _nan2() -> tuple[float, float]:
    return (math.nan, math.nan)


def _palette_votes(pixels: np.ndarray) -> np.ndarray:
    """(3, n) object pixels on 0..255 -> (8,) how many are nearest each palette colour."""
    # |p - q|^2 = |p|^2 - 2 p.q + |q|^2; |p|^2 does not change the argmin.
    dist = (_PALETTE_255**2).sum(-1)[:, None] - 2.0 * _PALETTE_255 @ pixels  # (8, n)
    return np.bincount(dist.argmin(axis=0), minlength=len(COLOURS))


def read_clip(video: Any, *, min_present_fraction: float = 0.5) -> ClipReading:
    """Read colour, shape and motion from one clip (see module docstring for the rules)."""
    arr = _to_cfhw255(video)                                         # (3, f, h, w)
    mask = _object_mask(arr)                                         # (f, h, w)
    stats = _frame_stats(mask)
    present = stats.areas > 0
    present_fraction = float(present.mean())
    if present_fraction < min_present_fraction or not present.any():
        return ClipReading(None, None, None, True, present_fraction, math.nan, math.nan, -1, -1,
                           math.nan, math.nan, math.nan, _nan2(), _nan2(), _nan2(), math.nan)

    # Colour: nearest palette entry per object pixel, majority over all frames.
    votes = _palette_votes(arr[:, mask])
    colour = COLOURS[int(votes.argmax())]
    colour_share = float(votes.max() / votes.sum())

    # Shape: median fill ratio -> nearest reference value.
    fill = float(np.nanmedian(stats.fills))
    shape = min(SHAPE_FILL, key=lambda s: abs(SHAPE_FILL[s] - fill))

    # Motion: area ratio first, then centroid displacement.
    idx = np.flatnonzero(present)
    first, last = int(idx[0]), int(idx[-1])
    area_first, area_last = float(stats.areas[first]), float(stats.areas[last])
    area_ratio = area_last / area_first
    c_first, c_last = stats.centroids[first], stats.centroids[last]
    dx, dy = (c_last - c_first).tolist()
    disp_frac = math.hypot(dx, dy) / stats.width
    if area_ratio > GROWING_RATIO:
        motion = "growing"
    elif area_ratio < SHRINKING_RATIO:
        motion = "shrinking"
    elif disp_frac < STILL_FRACTION:
        motion = "standing still"
    elif abs(dx) >= abs(dy):
        motion = "moving right" if dx > 0 else "moving left"
    else:
        motion = "moving down" if dy > 0 else "moving up"

    return ClipReading(colour, shape, motion, False, present_fraction, colour_share, fill,
                       first, last, area_first, area_last, area_ratio,
                       (float(c_first[0]), float(c_first[1])), (float(c_last[0]), float(c_last[1])),
                       (dx, dy), disp_frac)


def read_clips(videos: Any, *, min_present_fraction: float = 0.5) -> list[ClipReading]:
    """Read a batch: a (b, c, f, h, w) tensor, a single (c, f, h, w) tensor, or a sequence of clips."""
    if isinstance(videos, torch.Tensor):
        if videos.dim() == 4:
            videos = [videos]
        elif videos.dim() != 5:
            raise InputError(f"expected (b, c, f, h, w) or (c, f, h, w), got shape {tuple(videos.shape)}")
    elif isinstance(videos, np.ndarray):
        videos = [videos] if videos.ndim == 4 else list(videos)
    return [read_clip(v, min_present_fraction=min_present_fraction) for v in videos]


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------

def _target_attributes(target: Any) -> tuple[str, str, str]:
    if all(hasattr(target, a) for a in ("colour", "shape", "motion")):
        return target.colour, target.shape, target.motion
    if isinstance(target, (tuple, list)) and len(target) in (3, 4):
        return tuple(target[-3:])  # (colour, shape, motion) or (prompt, colour, shape, motion)
    raise InputError(f"a target must have colour/shape/motion or be a (colour, shape, motion) "
                     f"tuple, got {target!r}")


def score_readings(readings: Sequence[ClipReading], targets: Sequence[Any]) -> dict[str, float]:
    """Fractions of clips whose colour / shape / motion / all three match, and of blank clips.

    ``targets``: EvalPrompt objects, ``(colour, shape, motion)`` or
    ``(prompt, colour, shape, motion)`` tuples. Blank clips count as wrong. Also returns ``n``.
    """
    if len(readings) != len(targets):
        raise InputError(f"got {len(readings)} readings but {len(targets)} targets")
    if not readings:
        raise InputError("nothing to score: readings and targets are empty")
    hits = np.zeros((len(readings), 4), dtype=bool)
    for i, (reading, target) in enumerate(zip(readings, targets)):
        colour, shape, motion = _target_attributes(target)
        row = [reading.colour == colour, reading.shape == shape, reading.motion == motion]
        hits[i] = row + [all(row)]
    means = hits.mean(axis=0)
    return {"colour": float(means[0]), "shape": float(means[1]), "motion": float(means[2]),
            "all_three": float(means[3]),
            "blank": float(np.mean([r.blank for r in readings])), "n": float(len(readings))}


def confusion_table(wanted: Sequence[str], read: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{asked for: {read as: count}}``, in the order the pairs come (what ``phenaki eval`` and the
    text probe report as ``shape_read_as`` and ``motion_read_as``)."""
    table: dict[str, dict[str, int]] = {}
    for asked, seen in zip(wanted, read, strict=True):
        row = table.setdefault(asked, {})
        row[seen] = row.get(seen, 0) + 1
    return table


def chain_continuity(scene_a: Any, scene_b: Any, *, first_new_frame: int = 0) -> float:
    """Centroid jump from the last frame of ``scene_a`` to frame ``first_new_frame`` of
    ``scene_b``, as a fraction of the width. NaN when either frame has no object pixels.

    Pass ``first_new_frame=p`` when ``scene_b`` starts with ``p`` copied prime frames.
    """
    a, b = _to_cfhw255(scene_a), _to_cfhw255(scene_b)
    if a.shape[2:] != b.shape[2:]:
        raise InputError(f"scenes differ in frame size: {a.shape[2:]} vs {b.shape[2:]}")
    if not 0 <= first_new_frame < b.shape[1]:
        raise InputError(f"first_new_frame={first_new_frame} is outside scene_b's {b.shape[1]} frames")
    ca = _frame_stats(_object_mask(a[:, -1:])).centroids[0]
    cb = _frame_stats(_object_mask(b[:, first_new_frame:first_new_frame + 1])).centroids[0]
    if np.isnan(ca).any() or np.isnan(cb).any():
        return math.nan
    return float(math.hypot(*(cb - ca)) / a.shape[3])


# --------------------------------------------------------------------------------------------
# Per-frame consistency
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameConsistency:
    """How one clip holds together frame by frame (see the module docstring).

    frame_colours / frame_shapes: each frame read on its own (None where the frame is empty);
    frame0_differs: frame 0 empty, or another colour or shape than the other frames' majority;
    shape_changes: frames reading as another shape than the clip; morphs: shape_changes >
    ``MORPH_FRAMES``; stray_per_frame / halo_per_frame: mean pixel counts per frame.
    """

    frame_colours: tuple[str | None, ...]
    frame_shapes: tuple[str | None, ...]
    frame0_differs: bool
    shape_changes: int
    morphs: bool
    stray_per_frame: float
    halo_per_frame: float


def _majority(values: Sequence[str | None]) -> str | None:
    seen = [v for v in values if v is not None]
    return max(set(seen), key=seen.count) if seen else None


def _main_object(mask: np.ndarray) -> np.ndarray:
    """(f, h, w) bool -> the largest 8-connected component of each frame, same shape."""
    f, h, w = mask.shape
    m = torch.from_numpy(mask)[:, None].float()                         # f 1 h w
    labels = (torch.arange(1, h * w + 1, dtype=torch.float32).view(1, 1, h, w) * m)
    for _ in range(h * w):                                              # converges in ~object length
        grown = torch.nn.functional.max_pool2d(labels, 3, stride=1, padding=1) * m
        if torch.equal(grown, labels):
            break
        labels = grown
    labels = labels[:, 0].long().numpy()                                # f h w
    main = np.zeros_like(mask)
    for t in range(f):
        ids, counts = np.unique(labels[t][labels[t] > 0], return_counts=True)
        if ids.size:
            main[t] = labels[t] == ids[counts.argmax()]
    return main


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    m = torch.from_numpy(mask)[:, None].float()
    return torch.nn.functional.max_pool2d(m, 2 * radius + 1, stride=1, padding=radius)[:, 0].numpy() > 0


def frame_consistency(video: Any) -> FrameConsistency:
    """Read every frame of one clip on its own, and count stray and halo pixels."""
    arr = _to_cfhw255(video)                                            # (3, f, h, w)
    mask = _object_mask(arr)                                            # (f, h, w)
    stats = _frame_stats(mask)
    f = mask.shape[0]
    colours: list[str | None] = []
    shapes: list[str | None] = []
    for t in range(f):
        if not stats.areas[t]:
            colours.append(None)
            shapes.append(None)
            continue
        colours.append(COLOURS[int(_palette_votes(arr[:, t][:, mask[t]]).argmax())])
        shapes.append(min(SHAPE_FILL, key=lambda s: abs(SHAPE_FILL[s] - stats.fills[t])))
    clip_shape = _majority(shapes)
    rest_colour, rest_shape = _majority(colours[1:]), _majority(shapes[1:])
    frame0_differs = clip_shape is not None and (
        shapes[0] is None or (f > 1 and (colours[0] != rest_colour or shapes[0] != rest_shape)))
    changes = sum(s is not None and s != clip_shape for s in shapes)
    stray = mask & ~_dilate(_main_object(mask), STRAY_DISTANCE)
    brightest = arr.max(axis=0)                                         # (f, h, w)
    halo = (brightest > HALO_THRESHOLD) & ~mask
    return FrameConsistency(tuple(colours), tuple(shapes), bool(frame0_differs), int(changes),
                            changes > MORPH_FRAMES, float(stray.sum() / f), float(halo.sum() / f))


def consistency_scores(videos: Any) -> dict[str, float]:
    """Shares of clips whose first frame differs and that morph, and mean stray and halo pixels
    per frame, over a batch (b, c, f, h, w) or a sequence of clips."""
    if isinstance(videos, torch.Tensor) and videos.dim() == 4:
        videos = [videos]
    found = [frame_consistency(v) for v in videos]
    if not found:
        raise InputError("nothing to measure: no clips")
    return {"frame0_differs": float(np.mean([c.frame0_differs for c in found])),
            "morphing": float(np.mean([c.morphs for c in found])),
            "stray_pixels_per_frame": float(np.mean([c.stray_per_frame for c in found])),
            "clips_with_stray": float(np.mean([c.stray_per_frame > 0 for c in found])),
            "halo_pixels_per_frame": float(np.mean([c.halo_per_frame for c in found])),
            "n": float(len(found))}

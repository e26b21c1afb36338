"""Shapes World: a procedural text-video world for the bundled demo model.

Implements the contract in docs/shapes_world.md: one flat-coloured object (disc, axis-aligned square
or upright triangle) on a black background, moving left/right/up/down, standing still, growing
or shrinking, with a caption. Part of the clips are *continuation* clips (motion A for the first
``prime_frames`` frames, then motion B from exactly where A left off; the caption names B only),
so the model learns to continue a primed scene.

All pixel quantities are given at 64x64 and scaled by ``image_size / 64``.

Rasterisation (why it looks the way it does)
--------------------------------------------
Each frame's object is drawn inside an integer pixel box: width ``w = round(2 * half_extent)``,
placed at the rounded centre. Inside the box the sprite depends only on (shape, w):

* square: the whole ``w x w`` box (fill ratio 1.0);
* circle: pixels whose centre lies within radius ``rho(w)`` of the box centre, where ``rho`` is
  picked so the pixel bounding box is exactly ``w`` wide and the pixel area is as close as
  possible to ``pi/4`` of it (so a judge reads ~0.79 even for small discs);
* triangle: box ``w`` wide and ``round(w * sqrt(3) / 2)`` tall, apex up; pixels whose centre is
  inside the continuous triangle, plus the apex pixel(s) (fill ratio ~0.5).

This keeps the "object pixels / bounding box" ratio that judges use unambiguous at every size
the world produces (w >= 7 at 64x64 for the frames a judge's median looks at), and shapes move
rigidly (no sub-pixel shimmer). The price is that positions are quantised to whole pixels.

Determinism: every random draw goes through an explicit ``numpy.random.Generator``;
``ShapesWorldDataset[i]`` depends only on ``(seed, epoch, i)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..validation import is_int, is_number
from .captions import COLOURS, MOTIONS, PALETTE, SHAPES, SIZE_MOTIONS, canonical_caption
from .typed import training_caption

logger = logging.getLogger(__name__)

# ---- world constants, in pixels at 64x64 (scaled with image_size / 64) ----------------------
REFERENCE_SIZE = 64
MIN_IMAGE_SIZE = 16
SPEED_RANGE = (1.0, 2.5)             # px per frame, translations
HALF_EXTENT_RANGE = (5.0, 10.0)      # objects that do not change size
SIZE_LIMITS = (3.0, 14.0)            # half-extent bounds whenever size changes
SIZE_MOTION_SMALL_RANGE = (4.0, 9.0)  # the small end of a growing / shrinking segment
SIZE_RATIO_RANGE = (1.5, 2.5)        # big/small half-extent over a growing/shrinking segment
MARGIN = 1.0                          # keep this far from the border (continuous geometry)
_MAX_ATTEMPTS = 200

_DIRECTIONS: dict[str, tuple[float, float]] = {  # (dx, dy); image y grows downward
    "moving left": (-1.0, 0.0),
    "moving right": (1.0, 0.0),
    "moving up": (0.0, -1.0),
    "moving down": (0.0, 1.0),
}
_PALETTE_FLOAT = {name: np.asarray(rgb, dtype=np.float32) / np.float32(255.0)
                  for name, rgb in PALETTE.items()}
_SQRT3_2 = math.sqrt(3.0) / 2.0


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShapesWorldConfig:
    """Validated generator settings.

    ``image_size``: square frame side. The contract (and the judge's reading rules) assume
    >= 64; smaller sizes (>= 16) are allowed for fast tests but small objects become ambiguous.
    ``num_frames`` and ``prime_frames`` must follow ``1 + k * temporal_patch``.
    ``continuation_prob``: share of continuation clips (motion A for ``prime_frames`` frames,
    then motion B). ``paraphrase_prob``: share of captions that are reworded; ``typed_share``: share
    of the reworded ones written the way people type prompts (tag lists, commands, tenses, casing,
    typos; :mod:`.typed`), the rest are paraphrases.
    """

    image_size: int = 64
    num_frames: int = 17
    temporal_patch: int = 2
    continuation_prob: float = 0.3
    prime_frames: int = 5
    paraphrase_prob: float = 0.5
    typed_share: float = 0.5
    fps: int = 8

    def __post_init__(self) -> None:
        for name in ("image_size", "num_frames", "temporal_patch", "prime_frames", "fps"):
            value = getattr(self, name)
            if not is_int(value, 1):
                raise ConfigError(f"ShapesWorldConfig.{name} must be a positive integer, got {value!r}")
        for name in ("continuation_prob", "paraphrase_prob", "typed_share"):
            value = getattr(self, name)
            if not is_number(value, 0.0, 1.0):
                raise ConfigError(f"ShapesWorldConfig.{name} must be a probability in [0, 1], got {value!r}")
        if self.image_size < MIN_IMAGE_SIZE:
            raise ConfigError(f"ShapesWorldConfig.image_size must be >= {MIN_IMAGE_SIZE} "
                              f"(the contract uses >= 64), got {self.image_size}")
        pt = self.temporal_patch
        if self.num_frames < 1 + pt or (self.num_frames - 1) % pt:
            k = max(1, round((self.num_frames - 1) / pt))
            raise ConfigError(f"ShapesWorldConfig.num_frames must be 1 + k * temporal_patch with k >= 1 "
                              f"(temporal_patch={pt}), got {self.num_frames}; try {1 + k * pt}")
        if (self.prime_frames - 1) % pt or not self.prime_frames < self.num_frames:
            example = 1 + 2 * pt if 1 + 2 * pt < self.num_frames else 1
            raise ConfigError(f"ShapesWorldConfig.prime_frames must be 1 + k * temporal_patch "
                              f"(temporal_patch={pt}) and smaller than num_frames ({self.num_frames}), "
                              f"got {self.prime_frames}; e.g. {example}")

        # The slowest translation of the largest object must fit inside the frame.
        longest = int((REFERENCE_SIZE - 2 * HALF_EXTENT_RANGE[1] - 2 * MARGIN) / SPEED_RANGE[0]) + 1
        if self.num_frames > longest:
            raise ConfigError(f"ShapesWorldConfig.num_frames={self.num_frames} is too long: an object moving at "
                              f"the minimum speed would leave the frame; use at most {longest} frames")

    @property
    def scale(self) -> float:
        """Pixels per 64x64-pixel."""
        return self.image_size / REFERENCE_SIZE


# --------------------------------------------------------------------------------------------
# Rasterisation
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _circle_radius_sq(w: int) -> float:
    """Squared radius for a circle sprite in a ``w``-pixel box (see module docstring)."""
    d = np.arange(w, dtype=np.float64) - (w - 1) / 2.0  # pixel-centre offsets from box centre
    dist_sq = d[None, :] ** 2 + d[:, None] ** 2           # (w, w)
    lo, hi = ((w - 1) / 2.0) ** 2, ((w + 1) / 2.0) ** 2
    candidates = np.unique(dist_sq[(dist_sq >= lo) & (dist_sq < hi)])
    if candidates.size == 0:  # w == 1
        return 0.0
    counts = (dist_sq[None] <= candidates[:, None, None]).sum(axis=(1, 2))
    error = np.abs(counts / float(w * w) - math.pi / 4.0)
    # Best fill; ties go to the radius nearest w/2.
    best = np.lexsort((np.abs(np.sqrt(candidates) - w / 2.0), np.round(error, 9)))[0]
    return float(candidates[best])


@lru_cache(maxsize=8)
def _circle_radius_sq_table(size: int) -> np.ndarray:
    return np.asarray([_circle_radius_sq(w) if w > 0 else 0.0 for w in range(size + 1)], dtype=np.float32)


@lru_cache(maxsize=8)
def _grid(size: int) -> np.ndarray:
    """Pixel indices 0..size-1 as float32, the precomputed coordinate grid."""
    grid = np.arange(size, dtype=np.float32)
    grid.flags.writeable = False
    return grid


def sprite_boxes(shape: str, centers: np.ndarray, half_extents: np.ndarray,
                 image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integer pixel boxes ``(left, top, width, height)``, each ``(f,)`` int64, per frame."""
    h = np.asarray(half_extents, dtype=np.float64)
    c = np.asarray(centers, dtype=np.float64)
    width = np.clip(np.floor(2.0 * h + 0.5), 1, image_size).astype(np.int64)
    if shape == "triangle":
        height = np.clip(np.floor(width * _SQRT3_2 + 0.5), 1, image_size).astype(np.int64)
    else:
        height = width
    left = np.clip(np.floor(c[:, 0] - width / 2.0 + 0.5).astype(np.int64), 0, image_size - width)
    top = np.clip(np.floor(c[:, 1] - height / 2.0 + 0.5).astype(np.int64), 0, image_size - height)
    return left, top, width, height


def render_masks(shape: str, centers: np.ndarray, half_extents: np.ndarray,
                 image_size: int) -> np.ndarray:
    """Object masks, vectorised over frames.

    centers: (f, 2) as (x, y) in pixels (pixel i spans [i, i+1)); half_extents: (f,).
    Returns bool (f, h, w).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")
    left, top, width, height = sprite_boxes(shape, centers, half_extents, image_size)
    grid = _grid(image_size)
    w_f = width.astype(np.float32)[:, None, None]
    dx = grid[None, None, :] - (left.astype(np.float32)[:, None, None] + (w_f - 1) / 2)  # (f, 1, W)
    if shape == "triangle":
        row = grid[None, :, None] - top.astype(np.float32)[:, None, None]                 # (f, H, 1)
        h_f = height.astype(np.float32)[:, None, None]
        half_width = np.maximum(w_f / 2 * (row + 0.5) / h_f, np.float32(0.5))          # (f, H, 1)
        return (row >= 0) & (row < h_f) & (np.abs(dx) <= half_width + np.float32(1e-4))
    dy = grid[None, :, None] - (top.astype(np.float32)[:, None, None] + (w_f - 1) / 2)   # (f, H, 1)
    if shape == "square":
        half = (w_f - 1) / 2 + np.float32(1e-4)
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    r2 = _circle_radius_sq_table(image_size)[width][:, None, None]                        # (f, 1, 1)
    return dx * dx + dy * dy <= r2


def render_video(shape: str, colour: str, centers: np.ndarray, half_extents: np.ndarray,
                 image_size: int) -> np.ndarray:
    """Render a clip from explicit geometry. Returns float32 (c=3, f, h, w) in [0, 1]."""
    if colour not in PALETTE:
        raise ValueError(f"unknown colour {colour!r}; choose one of {COLOURS}")
    mask = render_masks(shape, centers, half_extents, image_size)                  # (f, h, w)
    rgb = _PALETTE_FLOAT[colour]
    video = np.empty((3,) + mask.shape, dtype=np.float32)                          # (c, f, h, w)
    for ch in range(3):
        np.multiply(mask, rgb[ch], out=video[ch])
    return video


# --------------------------------------------------------------------------------------------
# Trajectory planning
# --------------------------------------------------------------------------------------------

def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * rng.random())


def _size_segment(rng: np.random.Generator, motion: str, steps: int, s: float) -> tuple[float, float]:
    """Start half-extent and per-frame change for a segment that is judged on its own."""
    if motion not in SIZE_MOTIONS:
        return _uniform(rng, *HALF_EXTENT_RANGE) * s, 0.0
    small = _uniform(rng, *SIZE_MOTION_SMALL_RANGE)
    ratio = _uniform(rng, SIZE_RATIO_RANGE[0], min(SIZE_RATIO_RANGE[1], SIZE_LIMITS[1] / small))
    small, big = small * s, small * ratio * s
    if motion == "growing":
        return small, (big - small) / steps
    return big, (small - big) / steps


def _velocity(rng: np.random.Generator, motion: str, s: float, max_speed: float) -> tuple[float, float]:
    """Per-frame (dx, dy); speed uniform in SPEED_RANGE, capped at ``max_speed`` (at 64x64)."""
    if motion not in _DIRECTIONS:
        return 0.0, 0.0
    speed = _uniform(rng, SPEED_RANGE[0], min(SPEED_RANGE[1], max_speed)) * s
    dx, dy = _DIRECTIONS[motion]
    return dx * speed, dy * speed


def plan_trajectory(rng: np.random.Generator, config: ShapesWorldConfig, motion: str,
                    prev_motion: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Continuous geometry of one clip: centres (f, 2) as (x, y) and half-extents (f,).

    With ``prev_motion``, steps 1..p-1 follow ``prev_motion`` and steps p..f-1 follow
    ``motion`` (p = ``config.prime_frames``), starting exactly where the first part ended.
    Both parts are planned together so the whole path stays inside the frame.
    """
    f, s, size = config.num_frames, config.scale, config.image_size
    p = config.prime_frames if prev_motion is not None else 1
    n_a, n_b = p - 1, f - p                          # steps in each part
    lo_h, hi_h = SIZE_LIMITS[0] * s - 1e-6, SIZE_LIMITS[1] * s + 1e-6
    margin = MARGIN * s
    for _ in range(_MAX_ATTEMPTS):
        # Sizes: plan part B as a stand-alone segment starting at frame p-1.
        h_b, g_b = _size_segment(rng, motion, n_b, s)
        g_a = 0.0
        if prev_motion in SIZE_MOTIONS:
            # Part A changes size at a typical full-clip rate, ending at h_b.
            ratio = _uniform(rng, *SIZE_RATIO_RANGE)
            g_a = h_b * (1.0 - 1.0 / ratio) / (f - 1) if prev_motion == "growing" \
                else h_b * (ratio - 1.0) / (f - 1) * -1.0
        h0 = h_b - g_a * n_a
        steps_g = np.concatenate([np.full(n_a, g_a), np.full(n_b, g_b)])
        half = np.concatenate([[h0], h0 + np.cumsum(steps_g)])                # (f,)
        if motion in SIZE_MOTIONS or prev_motion in SIZE_MOTIONS:
            if half.min() < lo_h or half.max() > hi_h:
                continue
        # Positions: per-step velocities, then pick a start so every frame fits. The speed cap
        # guarantees room even if all translating steps go the same way (only binds for long clips).
        n_moving = (n_a if prev_motion in _DIRECTIONS else 0) + (n_b if motion in _DIRECTIONS else 0)
        max_speed = (size - 2 * half.max() - 2 * margin) / (max(n_moving, 1) * s)
        if n_moving and max_speed < SPEED_RANGE[0]:
            continue
        va = _velocity(rng, prev_motion, s, max_speed) if prev_motion else (0.0, 0.0)
        vb = _velocity(rng, motion, s, max_speed)
        steps_v = np.concatenate([np.tile(va, (n_a, 1)), np.tile(vb, (n_b, 1))]).reshape(-1, 2)
        offsets = np.concatenate([np.zeros((1, 2)), np.cumsum(steps_v, axis=0)])  # (f, 2)
        start = np.empty(2)
        for axis in range(2):
            lo = np.max(half - offsets[:, axis]) + margin
            hi = np.min(size - half - offsets[:, axis]) - margin
            if lo > hi:
                break
            start[axis] = _uniform(rng, lo, hi)
        else:
            return start[None, :] + offsets, half
    logger.debug("trajectory planning failed: config=%s motion=%s prev_motion=%s", config, motion, prev_motion)
    raise RuntimeError(f"could not fit a {prev_motion} -> {motion} trajectory into "
                       f"{size}x{size} frames after {_MAX_ATTEMPTS} attempts")


# --------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------

@dataclass
class ShapesClip:
    """One generated clip.

    video: float32 (c=3, f, h, w) in [0, 1]. caption: training caption (maybe a paraphrase).
    canonical: the canonical caption. prev_motion: motion of the first ``prime_frames``
    frames for continuation clips, else None (then ``prime_frames`` is 0).
    centers (f, 2) as (x, y) and half_extents (f,): the planned continuous geometry.
    """

    video: torch.Tensor
    caption: str
    canonical: str
    colour: str
    shape: str
    motion: str
    prev_motion: str | None
    prime_frames: int
    centers: np.ndarray
    half_extents: np.ndarray

    @property
    def is_continuation(self) -> bool:
        return self.prev_motion is not None


def _as_generator(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        return np.random.default_rng(int(seed))
    raise ValueError(f"seed must be a non-negative int or a numpy.random.Generator, got {seed!r}")


def _pick(value: str | None, choices: tuple[str, ...], drawn: int, what: str) -> str:
    if value is None:
        return choices[drawn]
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {choices}")
    return value


def render_clip(seed: int | np.random.Generator, config: ShapesWorldConfig | None = None, *,
                colour: str | None = None, shape: str | None = None, motion: str | None = None,
                prev_motion: str | None = None, continuation: bool | None = None) -> ShapesClip:
    """Generate one clip, deterministically from ``seed``.

    Attributes left as None are drawn at random. A continuation clip is made when
    ``prev_motion`` is given, or ``continuation=True`` (then ``prev_motion`` is drawn, different
    from ``motion``), or, with ``continuation=None``, with probability ``config.continuation_prob``.
    The same random draws are consumed whatever is fixed, so fixing one attribute does not
    change the others.
    """
    config = config or ShapesWorldConfig()
    rng = _as_generator(seed)
    draws = rng.integers([len(COLOURS), len(SHAPES), len(MOTIONS), len(MOTIONS) - 1])
    continuation_draw = rng.random()
    caption_seed = int(rng.integers(2**63 - 1))

    colour = _pick(colour, COLOURS, int(draws[0]), "colour")
    shape = _pick(shape, SHAPES, int(draws[1]), "shape")
    motion = _pick(motion, MOTIONS, int(draws[2]), "motion")
    if prev_motion is not None:
        if continuation is False:
            raise ValueError("prev_motion was given, so continuation cannot be False")
        _pick(prev_motion, MOTIONS, 0, "prev_motion")
    else:
        wanted = continuation if continuation is not None else continuation_draw < config.continuation_prob
        if wanted:
            others = tuple(m for m in MOTIONS if m != motion)
            prev_motion = others[int(draws[3])]

    centers, half_extents = plan_trajectory(rng, config, motion, prev_motion)
    video = render_video(shape, colour, centers, half_extents, config.image_size)
    caption = training_caption(colour, shape, motion, np.random.default_rng(caption_seed),
                               config.paraphrase_prob, config.typed_share)
    return ShapesClip(
        video=torch.from_numpy(video), caption=caption,
        canonical=canonical_caption(colour, shape, motion), colour=colour, shape=shape,
        motion=motion, prev_motion=prev_motion,
        prime_frames=config.prime_frames if prev_motion is not None else 0,
        centers=centers, half_extents=half_extents)


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------

class ShapesWorldDataset(Dataset):
    """Map-style, infinite-feeling Shapes World dataset.

    ``dataset[i]`` depends only on ``(seed, epoch, i)``, so it is identical in every DataLoader
    worker and across resumed runs: to resume exactly, rebuild with the same config and seed,
    call :meth:`set_epoch` and continue from the same sample index. (With persistent workers,
    call ``set_epoch`` before the workers start; they hold a copy of the dataset.)

    Items are collate-friendly dicts::

        video: float32 (c, f, h, w) in [0, 1];  caption, canonical, colour, shape, motion: str;
        prev_motion: str ("" unless continuation);  prime_frames: int (0 unless continuation);
        colour_id, shape_id, motion_id: int (indices into COLOURS, SHAPES, MOTIONS)
    """

    is_procedural = True  # every index is a fresh random clip: no need to shuffle positions

    def __init__(self, config: ShapesWorldConfig | None = None, seed: int = 0,
                 length: int = 10**7, epoch: int = 0) -> None:
        self.config = config or ShapesWorldConfig()
        for name, value in (("seed", seed), ("length", length), ("epoch", epoch)):
            if not is_int(value, 0):
                raise ConfigError(f"ShapesWorldDataset {name} must be a non-negative int, got {value!r}")
        if length == 0:
            raise ConfigError("ShapesWorldDataset length must be >= 1")
        self.seed, self.length, self.epoch = seed, length, epoch

    def set_epoch(self, epoch: int) -> None:
        """Select a different (but reproducible) stream of clips."""
        if not is_int(epoch, 0):
            raise ConfigError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def generator(self, index: int) -> np.random.Generator:
        """The random generator behind item ``index``."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def clip(self, index: int) -> ShapesClip:
        """Item ``index`` as a :class:`ShapesClip` (geometry included)."""
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for ShapesWorldDataset of length {self.length}")
        return render_clip(self.generator(index), self.config)

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip = self.clip(int(index))
        return {
            "video": clip.video,
            "caption": clip.caption,
            "canonical": clip.canonical,
            "colour": clip.colour,
            "shape": clip.shape,
            "motion": clip.motion,
            "prev_motion": clip.prev_motion or "",
            "prime_frames": clip.prime_frames,
            "colour_id": COLOURS.index(clip.colour),
            "shape_id": SHAPES.index(clip.shape),
            "motion_id": MOTIONS.index(clip.motion),
        }


__all__ = [
    "ShapesWorldConfig", "ShapesClip", "ShapesWorldDataset", "render_clip", "render_video",
    "render_masks", "sprite_boxes", "plan_trajectory",
]

"""Shapes World clips drawn by a second, independent renderer, for measuring the tokenizer.

The training generator (:mod:`phenaki_core.data.shapes_world`) rasterises every object on its
own integer pixel grid. A tokenizer can overfit to that exact grid, so its PSNR on the
generator's own clips can flatter it. This module draws clips that follow the same contract
(docs/shapes_world.md: palette, shapes, sizes, speeds, motions, black background) with Pillow's
``ImageDraw`` instead: sub-pixel centres rounded by Pillow, its own ellipse and polygon edges,
its own trajectory sampling. Nothing here imports the generator.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..data.captions import COLOURS, MOTIONS, PALETTE, SHAPES

SPEED = (1.0, 2.5)         # px per frame at 64x64
HALF_EXTENT = (5.0, 10.0)  # objects that keep their size
SIZE_CHANGE = (4.0, 12.0)  # half-extent ends of growing / shrinking (>= 40% change, inside 3..14)


def _draw(shape: str, colour: str, centre: tuple[float, float], half: float, size: int) -> np.ndarray:
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    x, y = centre
    fill = PALETTE[colour]
    if shape == "circle":
        draw.ellipse((x - half, y - half, x + half, y + half), fill=fill)
    elif shape == "square":
        draw.rectangle((x - half, y - half, x + half, y + half), fill=fill)
    else:  # upright equilateral triangle, apex up, centred on its bounding box
        height = half * math.sqrt(3.0)
        draw.polygon(((x, y - height / 2), (x + half, y + height / 2), (x - half, y + height / 2)), fill=fill)
    return np.asarray(image)


def independent_clip(rng: np.random.Generator, *, size: int = 64, frames: int = 17) -> tuple[torch.Tensor, tuple]:
    """One clip (c=3, f, h, w) float in [0, 1] and its (colour, shape, motion)."""
    colour, shape, motion = (str(rng.choice(COLOURS)), str(rng.choice(SHAPES)), str(rng.choice(MOTIONS)))
    scale = size / 64.0
    steps = frames - 1
    if motion in ("growing", "shrinking"):
        small, big = sorted(rng.uniform(*SIZE_CHANGE, size=2))
        big = max(big, small * 1.5)
        halves = np.linspace(small, big, frames) if motion == "growing" else np.linspace(big, small, frames)
        velocity = np.zeros(2)
    else:
        halves = np.full(frames, rng.uniform(*HALF_EXTENT))
        direction = {"moving left": (-1, 0), "moving right": (1, 0), "moving up": (0, -1),
                     "moving down": (0, 1)}.get(motion, (0, 0))
        velocity = np.asarray(direction, dtype=float) * rng.uniform(*SPEED)
    reach = halves.max() + 1.0
    travel = velocity * steps
    lo = reach + np.maximum(0.0, -travel)
    hi = 64.0 - reach - np.maximum(0.0, travel)
    start = rng.uniform(lo, hi)
    video = np.stack([_draw(shape, colour, tuple((start + velocity * t) * scale), halves[t] * scale, size)
                      for t in range(frames)])                                    # f h w c, uint8
    return torch.from_numpy(video).permute(3, 0, 1, 2).float() / 255.0, (colour, shape, motion)


def independent_clips(count: int, *, seed: int = 0, size: int = 64, frames: int = 17) -> tuple[torch.Tensor, list]:
    """``count`` clips as (b, c, f, h, w) and their (colour, shape, motion), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    clips = [independent_clip(rng, size=size, frames=frames) for _ in range(count)]
    return torch.stack([c for c, _ in clips]), [t for _, t in clips]

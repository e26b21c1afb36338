"""Writing and reading clips: GIF, WebP, PNG contact sheet, numbered PNG frames, MP4 (optional ``av``).

Frames are (c, f, H, W) float tensors in [0, 1] (the model's layout) or (f, H, W, c) arrays.
"""

from __future__ import annotations

import importlib.util
import math
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .errors import InputError

VIDEO_SUFFIXES = (".gif", ".webp", ".png", ".mp4")


def to_uint8_frames(video: torch.Tensor | np.ndarray) -> np.ndarray:
    """(c, f, H, W) float in [0, 1] -> (f, H, W, c) uint8."""
    if isinstance(video, torch.Tensor):
        if video.ndim != 4:
            raise InputError(f"expected one clip (channels, frames, H, W), got shape {tuple(video.shape)}")
        video = video.detach().float().clamp(0, 1).permute(1, 2, 3, 0).cpu().numpy()
        return np.round(video * 255).astype(np.uint8)
    if video.ndim != 4:
        raise InputError(f"expected frames (f, H, W, c), got shape {video.shape}")
    return video if video.dtype == np.uint8 else np.round(np.clip(video, 0, 1) * 255).astype(np.uint8)


def contact_sheet(frames: np.ndarray, columns: int | None = None) -> np.ndarray:
    """(f, H, W, c) -> one (rows*H, cols*W, c) image, frames left to right, top to bottom."""
    f, h, w, c = frames.shape
    columns = columns or min(f, max(1, math.ceil(math.sqrt(f * 1.5))))
    rows = math.ceil(f / columns)
    sheet = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for index, frame in enumerate(frames):
        r, col = divmod(index, columns)
        sheet[r * h:(r + 1) * h, col * w:(col + 1) * w] = frame
    return sheet


def output_kind(path: str | os.PathLike) -> str:
    """'gif' | 'webp' | 'png' | 'mp4' | 'dir' for an output path; unknown suffixes are an error."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return suffix[1:]
    if suffix == "":
        return "dir"
    raise InputError(f"unknown output type {suffix!r}; use .gif, .webp, .png (contact sheet), .mp4, "
                     f"or a directory name for numbered PNG frames")


def check_output_path(path: str | os.PathLike, kind: str | None = None) -> str:
    """Fail fast, before any work, when ``path`` cannot be written; returns its kind. Creates nothing.

    ``kind`` defaults to ``output_kind(path)``; pass "dir" for a directory, "file" for any file.
    Checks that a file output is not an existing directory (and a directory output not an
    existing file), and that the nearest existing parent is a directory where files can be made.
    """
    path = Path(path)
    kind = output_kind(path) if kind is None else kind
    if kind == "dir" and path.exists() and not path.is_dir():
        raise InputError(f"{path} is an existing file; give a new directory name for PNG frames, or a name "
                         f"ending in .gif, .webp, .png or .mp4")
    if kind != "dir" and path.is_dir():
        example = path / ("report.json" if kind == "file" else f"video.{kind}")
        raise InputError(f"{path} is a directory; give a file name such as {example}")
    if kind == "mp4" and importlib.util.find_spec("av") is None:
        raise InputError("writing .mp4 needs the optional 'av' package: pip install av (or use .gif / .webp)")
    anchor = path.absolute() if kind == "dir" else path.absolute().parent
    while not anchor.exists() and anchor != anchor.parent:  # the directories that would be created
        anchor = anchor.parent
    if not anchor.is_dir():
        raise InputError(f"cannot write {path}: {anchor} is a file, not a directory; choose another output location")
    try:
        with tempfile.TemporaryFile(dir=anchor):  # os.access is not enough: root, read-only mounts, /proc
            pass
    except OSError as exc:
        raise InputError(f"cannot write {path}: {anchor} is not writable ({exc.strerror}); choose another "
                         f"output location") from None
    return kind


def save_video(path: str | os.PathLike, video: torch.Tensor | np.ndarray, fps: float = 8.0,
               scale: int = 1) -> Path:
    """Write one clip to ``path``; the format follows the suffix (see ``output_kind``).

    A file is written to a temporary name and renamed into place, so a failed write never
    truncates an existing file.
    """
    from .files import atomic_write

    path = Path(path)
    kind = output_kind(path)
    frames = to_uint8_frames(video)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    target = path if kind == "dir" else path.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {target}: {exc.strerror}; choose a writable output location") from None
    if not os.access(target, os.W_OK):
        raise InputError(f"{target} is not writable; choose another output location")
    duration = int(round(1000 / fps))
    images = [Image.fromarray(frame) for frame in frames]

    def write(tmp: str) -> None:
        if kind == "png":
            Image.fromarray(contact_sheet(frames)).save(tmp, format="PNG")
        elif kind == "gif":
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0,
                           disposal=1)
        elif kind == "webp":
            images[0].save(tmp, format="WEBP", save_all=True, append_images=images[1:], duration=duration, loop=0,
                           lossless=True)
        else:
            _save_mp4(Path(tmp), frames, fps)

    try:
        if kind == "dir":
            for index, image in enumerate(images):
                image.save(path / f"{index:05d}.png")
        else:
            atomic_write(path, write, suffix=f".tmp{path.suffix}")
    except OSError as exc:
        raise InputError(f"could not write {path}: {exc.strerror or exc}; choose another output location "
                         f"(and check the free disk space)") from None
    return path


def _save_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    try:
        import av
    except ImportError:
        raise InputError("writing .mp4 needs the optional 'av' package: pip install av "
                         "(or use .gif / .webp)") from None
    from fractions import Fraction
    # H.264 wants even sizes
    h, w = frames.shape[1] - frames.shape[1] % 2, frames.shape[2] - frames.shape[2] % 2
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame[:h, :w], format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def side_by_side(clips: Sequence[torch.Tensor], gap: int = 2) -> torch.Tensor:
    """Join same-length clips (c, f, H, W) horizontally with a gap, for previews."""
    c, f, h, _ = clips[0].shape
    pieces = []
    for index, clip in enumerate(clips):
        if index:
            pieces.append(torch.full((c, f, h, gap), 0.5))
        pieces.append(clip.detach().float().cpu().clamp(0, 1))
    return torch.cat(pieces, dim=-1)


def grid(clips: Sequence[torch.Tensor], columns: int, gap: int = 2) -> torch.Tensor:
    """Tile clips (c, f, H, W) into rows of ``columns``."""
    rows = [side_by_side(clips[i:i + columns], gap) for i in range(0, len(clips), columns)]
    width = max(r.shape[-1] for r in rows)
    rows = [torch.nn.functional.pad(r, (0, width - r.shape[-1])) for r in rows]
    c, f = rows[0].shape[:2]
    out = []
    for index, row in enumerate(rows):
        if index:
            out.append(torch.full((c, f, gap, width), 0.5))
        out.append(row)
    return torch.cat(out, dim=2)

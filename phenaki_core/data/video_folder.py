"""A folder of captioned clips and images as a training dataset.

Layout (scanned recursively; hidden files and folders are ignored)::

    root/
      captions.jsonl | captions.csv     optional caption index (one of the two)
      walk.mp4  walk.txt                a clip and its sidecar caption
      sub/cat.gif  sub/cat.txt          any depth; GIF / WebP via Pillow
      dance/00001.png ...  dance.txt    a folder of numbered frames is one clip
      photo.jpg  photo.txt              a still image is a 1-frame clip

Decoders: ``.mp4 .webm .mkv .mov`` need PyAV (``pip install "phenaki-comfyui[video]"``);
``.gif .webp`` (animated or still), ``.png .jpg .jpeg`` and frame folders use Pillow only.

Captions: a sidecar ``<name>.txt`` next to the clip (``dance.txt`` next to the folder ``dance/``)
wins over the root index. The index is ``captions.jsonl`` (``{"file": ..., "caption": ...}`` per
line) or ``captions.csv`` (header with ``file`` and ``caption`` columns); ``file`` is the path
relative to ``root`` with ``/`` separators. Clips without a (non-blank) caption are skipped and
counted.

Frame folders: a leaf folder (no sub-folders, no video files) holding >= 2 images whose names end
in a number (``00001.png``, ``frame_12.jpg``) is one clip, frames in numeric order, played at
``VideoFolderConfig.folder_fps``. It is a folder of separate stills instead when any of its
images has its own caption (sidecar or index entry), or with ``frame_folders=False``.

Items (all stackable by the default collate)::

    video:      float32 (c=3, f, h, w), RGB in [0, 1], f = num_frames, h = w = image_size
    frame_mask: bool (f,), True on real frames; padded frames repeat the last real one
    caption:    str
    path:       str, the clip's absolute path

Sampling rules
--------------
* Time: with ``fps`` set, output frame ``j`` shows the source frame on screen at time
  ``start + j / fps`` (GIF/WebP per-frame durations are honoured; containers use their average
  frame rate). A 16 fps clip read at 8 fps takes every other frame; an 8 fps clip read at 16 fps
  shows each frame twice. ``fps=None`` takes consecutive source frames.
* Offset: ``start`` is a source frame, drawn uniformly among those that leave room for
  ``num_frames`` outputs (``offset="random"``), or the first (``"start"``) / middle (``"center"``)
  such frame. Random draws come from ``numpy.random.default_rng([seed, epoch, index])``, so an
  item depends only on (seed, epoch, index), in every DataLoader worker.
* Space: the largest centred square (``crop="center"``) or a square at a random position drawn
  once per clip (``crop="random"``) is resized to ``image_size`` (bicubic). Equivalent to
  "resize the shorter side to image_size, then crop".
* Short clips (fewer than ``num_frames`` output frames at the target fps): ``short_clips="pad"``
  keeps them, repeating the last frame with ``frame_mask`` False on the padding;
  ``short_clips="skip"`` drops them when the folder is indexed (lengths come from the probe).
  Still images are always kept (with ``include_images``) and padded the same way: one real frame.

Corrupt files
-------------
Every file is probed when the dataset is built (container metadata, or a full decode with
``verify="decode"``); unreadable ones are excluded, counted in :attr:`VideoFolderDataset.stats`
and summarised in one logged warning. A file that still fails when loaded (e.g. truncated after
its header) is logged, remembered, and replaced by the next index that loads, so
``dataset[i]`` does not raise (the replacement clip is then seen twice that epoch: the only
exception to "each index is one file"). Decoding past the real end of a file whose metadata
overstated its length pads the missing frames (``frame_mask`` False).

The dataset keeps no open file handles and is picklable; each process keeps its own record of
load-time failures (workers report them through logging).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Optional

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from ..errors import ConfigError, InputError
from ..validation import is_int, is_number

logger = logging.getLogger(__name__)

PYAV_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov")
ANIMATED_SUFFIXES = (".gif", ".webp")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
SUPPORTED_SUFFIXES = tuple(sorted(set(PYAV_SUFFIXES + ANIMATED_SUFFIXES + IMAGE_SUFFIXES)))
CAPTION_FILES = ("captions.jsonl", "captions.csv")
PYAV_EXTRA = 'pip install "phenaki-comfyui[video]"'
MAX_FALLBACKS = 16          # consecutive load failures before __getitem__ gives up
_DEFAULT_FRAME_MS = 100.0   # browsers show GIF frames with a delay <= 10 ms (or none) for 100 ms
_EPS = 1e-6
_NUMBERED = re.compile(r"(\d+)$")


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoFolderConfig:
    """Validated reading settings (see the module docstring for the rules).

    ``image_size``: square output side. ``num_frames``: frames per item, ``1 + k * temporal_patch``
    (match the model's C-ViViT). ``fps``: target frame rate, or None for consecutive frames.
    ``folder_fps``: frame rate of numbered-frame folders (they carry no timing).
    ``offset``: "random" | "start" | "center". ``crop``: "center" | "random".
    ``short_clips``: "pad" | "skip". ``include_images``: keep still images as 1-frame clips.
    ``frame_folders``: detect folders of numbered frames as clips.
    ``extensions``: restrict the scan to these suffixes (e.g. ``(".gif", ".png")``); None = all.
    ``verify``: "header" probes metadata only; "decode" decodes every frame at indexing time
    (slow, but corrupt data is excluded up front instead of at load time).
    """

    image_size: int = 64
    num_frames: int = 17
    temporal_patch: int = 2
    fps: Optional[float] = 8.0
    folder_fps: float = 8.0
    offset: Literal["random", "start", "center"] = "random"
    crop: Literal["center", "random"] = "center"
    short_clips: Literal["pad", "skip"] = "pad"
    include_images: bool = True
    frame_folders: bool = True
    extensions: Optional[tuple[str, ...]] = None
    verify: Literal["header", "decode"] = "header"

    def __post_init__(self) -> None:
        for name in ("image_size", "num_frames", "temporal_patch"):
            value = getattr(self, name)
            if not is_int(value, 1):
                raise ConfigError(f"VideoFolderConfig.{name} must be a positive integer, got {value!r}")
        pt = self.temporal_patch
        if (self.num_frames - 1) % pt:
            lower = 1 + ((self.num_frames - 1) // pt) * pt
            raise ConfigError(f"VideoFolderConfig.num_frames must be 1 + k * temporal_patch "
                              f"(temporal_patch={pt}), got {self.num_frames}; try {lower} or {lower + pt}")
        for name, optional in (("fps", True), ("folder_fps", False)):
            value = getattr(self, name)
            if value is None and optional:
                continue
            if not is_number(value) or value <= 0:
                allowed = "a positive number or None" if optional else "a positive number"
                raise ConfigError(f"VideoFolderConfig.{name} must be {allowed}, got {value!r}")
        for name, choices in (("offset", ("random", "start", "center")), ("crop", ("center", "random")),
                              ("short_clips", ("pad", "skip")), ("verify", ("header", "decode"))):
            if getattr(self, name) not in choices:
                raise ConfigError(f"VideoFolderConfig.{name} must be one of {choices}, got {getattr(self, name)!r}")
        for name in ("include_images", "frame_folders"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"VideoFolderConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if self.extensions is not None:
            if isinstance(self.extensions, str) or not isinstance(self.extensions, (tuple, list)):
                raise ConfigError(f"VideoFolderConfig.extensions must be a tuple of suffixes such as "
                                  f"('.gif', '.png'), got {self.extensions!r}")
            normalised = tuple(sorted({("." + str(e).lower().lstrip(".")) for e in self.extensions}))
            unknown = [e for e in normalised if e not in SUPPORTED_SUFFIXES]
            if unknown or not normalised:
                raise ConfigError(f"VideoFolderConfig.extensions has unsupported suffixes {unknown}; "
                                  f"choose from {SUPPORTED_SUFFIXES}")
            object.__setattr__(self, "extensions", normalised)

    @classmethod
    def for_model(cls, model_config: Any, **overrides: Any) -> "VideoFolderConfig":
        """Settings that fit a :class:`~phenaki_core.config.PhenakiConfig` (size, patch, fps)."""
        cv = model_config.cvivit
        values: dict[str, Any] = {"image_size": cv.image_size, "temporal_patch": cv.temporal_patch_size,
                                  "num_frames": min(17, model_config.max_frames), "fps": float(model_config.fps)}
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def allows(self, suffix: str) -> bool:
        return self.extensions is None or suffix in self.extensions


# --------------------------------------------------------------------------------------------
# Index entries and the report
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipEntry:
    """One indexed clip. ``kind``: "av" (PyAV container), "pil" (animated GIF/WebP),
    "frames" (numbered-frame folder) or "image" (one frame). ``starts``: source frame start
    times in seconds (None = constant rate ``i / fps``); ``duration`` in seconds."""

    path: str
    key: str
    kind: str
    caption: str
    num_frames: int
    fps: float
    duration: float
    starts: Optional[tuple[float, ...]] = None
    frames: Optional[tuple[str, ...]] = None

    def frame_starts(self) -> np.ndarray:
        """Start time of each source frame, seconds, float64 (n,)."""
        if self.starts is not None:
            return np.asarray(self.starts, dtype=np.float64)
        return np.arange(self.num_frames, dtype=np.float64) / self.fps


@dataclass
class VideoFolderReport:
    """What indexing (and, in this process, loading) found. Paths are relative to the root."""

    root: str
    found: int = 0
    videos: int = 0
    images: int = 0
    padded: int = 0
    missing_caption: list[str] = field(default_factory=list)
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    too_short: list[str] = field(default_factory=list)
    unmatched_captions: list[str] = field(default_factory=list)
    load_failures: list[tuple[str, str]] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)

    @property
    def usable(self) -> int:
        return self.videos + self.images

    @property
    def skipped(self) -> int:
        return len(self.missing_caption) + len(self.corrupt) + len(self.too_short)

    def summary(self) -> str:
        """One line: usable counts, then each kind of problem with a few examples."""
        parts = [f"{self.root}: {self.usable} usable of {self.found} found "
                 f"({self.videos} clips, {self.images} images, {self.padded} shorter than num_frames and padded)"]
        for label, items in (("without a caption", self.missing_caption),
                             ("unreadable", [f"{p} ({r})" for p, r in self.corrupt]),
                             ("too short (short_clips='skip')", self.too_short),
                             ("failed when loaded", [f"{p} ({r})" for p, r in self.load_failures]),
                             ("shorter than their metadata said", self.truncated),
                             ("caption entries naming no file", self.unmatched_captions)):
            if items:
                examples = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
                parts.append(f"{len(items)} {label}: {examples}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "found": self.found, "usable": self.usable, "videos": self.videos,
                "images": self.images, "padded": self.padded, "missing_caption": list(self.missing_caption),
                "corrupt": [list(x) for x in self.corrupt], "too_short": list(self.too_short),
                "unmatched_captions": list(self.unmatched_captions),
                "load_failures": [list(x) for x in self.load_failures], "truncated": list(self.truncated)}


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------

def _clean_caption(text: Any) -> str:
    return " ".join(str(text).split()) if text is not None else ""


def _normalise_key(key: str) -> str:
    key = str(key).replace("\\", "/").strip()
    return str(PurePosixPath(key)).lstrip("/") if key not in ("", ".") else ""


def read_caption_index(root: str | os.PathLike) -> dict[str, str]:
    """The root caption index as ``{relative path: caption}`` ({} when there is none).

    Raises :class:`InputError` for a malformed file (with the line number) or when both
    ``captions.jsonl`` and ``captions.csv`` exist.
    """
    root = Path(root)
    present = [name for name in CAPTION_FILES if (root / name).is_file()]
    if len(present) > 1:
        raise InputError(f"{root} has both captions.jsonl and captions.csv; keep one caption index")
    if not present:
        return {}
    path = root / present[0]
    captions: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            if path.suffix == ".jsonl":
                rows = []
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InputError(f"{path} line {number} is not valid JSON ({exc.msg})") from None
                    rows.append((number, row))
            else:
                reader = csv.DictReader(handle)
                if not reader.fieldnames or not {"file", "caption"} <= {f.strip() for f in reader.fieldnames}:
                    raise InputError(f"{path} needs a header row with 'file' and 'caption' columns, "
                                     f"got {reader.fieldnames}")
                rows = [(number, {(k or "").strip(): v for k, v in row.items()})
                        for number, row in enumerate(reader, start=2)]
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text: {exc}") from None
    for number, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("file"), str) or "caption" not in row:
            raise InputError(f"{path} line {number} must have a 'file' (string) and a 'caption'; got {row!r}")
        captions[_normalise_key(row["file"])] = _clean_caption(row["caption"])
    return captions


def _read_sidecar(path: Path) -> Optional[str]:
    if not path.is_file():
        return None
    try:
        return _clean_caption(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning("cannot read caption %s: %s", path, exc)
        return ""


# --------------------------------------------------------------------------------------------
# Scanning
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Candidate:
    path: Path
    key: str
    is_folder: bool = False
    frames: tuple[str, ...] = ()


def _frame_number(name: str) -> Optional[int]:
    match = _NUMBERED.search(Path(name).stem)
    return int(match.group(1)) if match else None


def _scan(root: Path, config: VideoFolderConfig, index: dict[str, str]) -> list[_Candidate]:
    """Media files and frame folders under ``root``, in sorted (reproducible) order."""
    found: list[_Candidate] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        here = Path(directory)
        rel = here.relative_to(root)
        media = sorted(f for f in files if not f.startswith(".") and Path(f).suffix.lower() in SUPPORTED_SUFFIXES)
        if here != root and config.frame_folders and not subdirs:
            frames = [f for f in media if Path(f).suffix.lower() in FRAME_SUFFIXES]
            others = [f for f in media if Path(f).suffix.lower() not in FRAME_SUFFIXES]
            own_captions = any((here / f).with_suffix(".txt").is_file()
                               or _normalise_key((rel / f).as_posix()) in index for f in frames)
            if (len(frames) >= 2 and not others and not own_captions
                    and all(_frame_number(f) is not None for f in frames)
                    and all(config.allows(Path(f).suffix.lower()) for f in frames)):
                frames.sort(key=lambda f: (_frame_number(f), f))
                found.append(_Candidate(here, rel.as_posix(), True, tuple(frames)))
                continue
        for name in media:
            if config.allows(Path(name).suffix.lower()):
                found.append(_Candidate(here / name, (rel / name).as_posix()))
    return found


# --------------------------------------------------------------------------------------------
# Probing (indexing time) and decoding (load time)
# --------------------------------------------------------------------------------------------

def _import_av():
    try:
        import av  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return av


def _webp_durations_ms(path: Path) -> Optional[list[int]]:
    """Frame durations (ms) from an animated WebP's ANMF chunks, or None if the file has none.

    Pillow reports a WebP frame's duration only after decoding its pixels, so the probe reads
    the container instead: RIFF chunks, each ANMF payload starting with x, y, width-1, height-1
    and the duration, 24-bit little-endian each."""
    durations = []
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
            return None
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                break
            size = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"ANMF":
                payload = handle.read(15)
                if len(payload) < 15:
                    break
                durations.append(int.from_bytes(payload[12:15], "little"))
                handle.seek(size + (size & 1) - 15, os.SEEK_CUR)
            else:
                handle.seek(size + (size & 1), os.SEEK_CUR)
    return durations or None


def _pil_durations(image: Image.Image, suffix: str) -> list[float]:
    """Per-frame durations in seconds of an opened animated image (seeks through it). A duration
    of 0 (or, in a GIF, 10 ms or less) counts as 100 ms, as browsers play it."""
    n = getattr(image, "n_frames", 1)
    webp = _webp_durations_ms(Path(image.filename)) if suffix == ".webp" and image.filename else None
    durations = []
    for i in range(n):
        if webp is not None and len(webp) == n:
            ms = webp[i]
        else:
            image.seek(i)
            ms = image.info.get("duration") or 0
        if ms <= 0 or (suffix == ".gif" and ms <= 10):
            ms = _DEFAULT_FRAME_MS
        durations.append(float(ms) / 1000.0)
    return durations


def _probe(candidate: _Candidate, caption: str, config: VideoFolderConfig) -> ClipEntry:
    """Index one candidate: frame count and timing, without decoding pixels (unless verify="decode").
    Raises on unreadable files."""
    path, suffix = candidate.path, candidate.path.suffix.lower()
    decode = config.verify == "decode"
    if candidate.is_folder:
        for name in candidate.frames if decode else candidate.frames[:1]:
            with Image.open(path / name) as image:  # opening reads and checks the header
                if decode:
                    image.load()
        n = len(candidate.frames)
        return ClipEntry(str(path), candidate.key, "frames", caption, n, config.folder_fps, n / config.folder_fps,
                         frames=candidate.frames)
    if suffix in PYAV_SUFFIXES:
        av = _import_av()
        if av is None:  # caught at scan time; kept for direct callers
            raise InputError(f"{path.name} needs PyAV: {PYAV_EXTRA}")
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError("no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            if not fps > 0:
                raise InputError("no frame rate in the container")
            n = int(stream.frames or 0)
            if n <= 0 and stream.duration and stream.time_base:
                n = int(round(float(stream.duration * stream.time_base) * fps))
            if n <= 0 and container.duration:
                n = int(round(container.duration / av.time_base * fps))
            if n <= 0 or decode:  # count packets (or decode everything to verify)
                counted = 0
                if decode:
                    for _ in container.decode(stream):
                        counted += 1
                else:
                    counted = sum(1 for packet in container.demux(stream) if packet.size)
                n = counted if decode or n <= 0 else n
            if n <= 0:
                raise InputError("no frames")
        return ClipEntry(str(path), candidate.key, "av", caption, n, fps, n / fps)
    with Image.open(path) as image:
        n = int(getattr(image, "n_frames", 1))
        if n <= 1:
            if decode:
                image.load()
            return ClipEntry(str(path), candidate.key, "image", caption, 1, config.folder_fps,
                             1.0 / config.folder_fps)
        durations = _pil_durations(image, suffix)
        if decode:
            for i in range(n):
                image.seek(i)
                image.load()
    starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    total = float(sum(durations))
    return ClipEntry(str(path), candidate.key, "pil", caption, n, n / total, total,
                     starts=tuple(float(s) for s in starts))


def output_frame_count(entry: ClipEntry, config: VideoFolderConfig, start: int = 0) -> int:
    """How many output frames fit in ``entry`` from source frame ``start`` (at most num_frames)."""
    if entry.kind == "image":
        return 1
    if config.fps is None:
        return min(config.num_frames, entry.num_frames - start)
    t0 = float(entry.frame_starts()[start])
    fitting = int(math.floor((entry.duration - t0) * config.fps - _EPS)) + 1
    return max(1, min(config.num_frames, fitting))


def sample_frame_indices(entry: ClipEntry, config: VideoFolderConfig,
                         rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Source frame index for each real output frame: int64 (n_real,), n_real <= num_frames.

    The start frame follows ``config.offset`` (``rng`` is needed for "random"); see the module
    docstring for the timing rule.
    """
    if entry.kind == "image":
        return np.zeros(1, dtype=np.int64)
    f = config.num_frames
    starts = entry.frame_starts()
    if config.fps is None:
        last_start = entry.num_frames - f
    else:
        # the last start frame whose window of f outputs still ends inside the clip
        last_start = int(np.searchsorted(starts, entry.duration - (f - 1) / config.fps - _EPS, side="left")) - 1
    if last_start < 0:  # short clip: all of it, from the beginning
        start = 0
    elif config.offset == "start":
        start = 0
    elif config.offset == "center":
        start = last_start // 2
    else:
        if rng is None:
            raise ConfigError("offset='random' needs a random generator")
        start = int(rng.integers(0, last_start + 1))
    count = output_frame_count(entry, config, start)
    if config.fps is None:
        return np.arange(start, start + count, dtype=np.int64)
    times = starts[start] + np.arange(count, dtype=np.float64) / config.fps
    indices = np.searchsorted(starts, times + _EPS, side="right") - 1
    return np.clip(indices, 0, entry.num_frames - 1).astype(np.int64)


class _FrameProcessor:
    """Square crop + resize of one clip's frames (one crop position for the whole clip)."""

    def __init__(self, size: int, crop: str, rng: np.random.Generator) -> None:
        self.size = size
        self.position = rng.random(2) if crop == "random" else np.full(2, 0.5)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """PIL image -> uint8 (size, size, 3) RGB."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        w, h = image.size
        side = min(w, h)
        left = int(round(self.position[0] * (w - side)))
        top = int(round(self.position[1] * (h - side)))
        box = (left, top, left + side, top + side)
        out = image.resize((self.size, self.size), Image.Resampling.BICUBIC, box=box)
        return np.asarray(out, dtype=np.uint8)


def _open_still(path: str | Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return ImageOps.exif_transpose(image).convert("RGB")


def _decode_pil(entry: ClipEntry, indices: np.ndarray, process: _FrameProcessor) -> list[np.ndarray]:
    wanted = {int(i) for i in indices}
    frames: dict[int, np.ndarray] = {}
    with Image.open(entry.path) as image:
        for i in range(int(indices.max()) + 1):
            image.seek(i)
            if i in wanted:
                frames[i] = process(image.convert("RGB"))
    return [frames[int(i)] for i in indices]


def _decode_av(entry: ClipEntry, indices: np.ndarray, process: _FrameProcessor,
               ) -> tuple[list[np.ndarray], bool]:
    """Decode the frames on screen at ``indices / fps``. Returns (frames, truncated)."""
    av = _import_av()
    if av is None:
        raise InputError(f"{Path(entry.path).name} needs PyAV: {PYAV_EXTRA}")
    targets = indices.astype(np.float64) / entry.fps
    tol = 0.5 / entry.fps
    out: list[Optional[np.ndarray]] = [None] * len(targets)
    with av.open(entry.path) as container:
        stream = container.streams.video[0]
        time_base = float(stream.time_base) if stream.time_base else 0.0
        start_pts = stream.start_time or 0
        seeked = targets[0] > 1.0 and time_base > 0
        if seeked:
            container.seek(start_pts + int(targets[0] / time_base), stream=stream, backward=True, any_frame=False)
        k, count = 0, 0
        prev_frame, prev_image = None, None
        for frame in container.decode(stream):
            if frame.pts is not None and time_base > 0:
                t = (frame.pts - start_pts) * time_base
            elif not seeked:
                t = count / entry.fps
            else:
                raise InputError("frames without timestamps after a seek")
            count += 1
            while k < len(targets) and targets[k] + tol < t:  # targets shown before this frame
                if prev_frame is None:  # before the first decoded frame: use it
                    prev_frame = frame
                if prev_image is None:
                    prev_image = process(prev_frame.to_image())
                out[k] = prev_image
                k += 1
            if k == len(targets):
                break
            prev_frame, prev_image = frame, None
        if prev_frame is None:
            raise InputError("no frames could be decoded")
        last_t = t if k < len(targets) else None
        while k < len(targets) and last_t is not None and targets[k] <= last_t + 1.5 / entry.fps:
            if prev_image is None:
                prev_image = process(prev_frame.to_image())
            out[k] = prev_image
            k += 1
    real = [frame for frame in out if frame is not None]
    return real, len(real) < len(out)


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------

class VideoFolderDataset(Dataset):
    """Captioned clips, animated images, frame folders and still images from a folder.

    See the module docstring for the layout, caption formats and sampling rules. ``dataset[i]``
    depends only on ``(seed, epoch, i)``; call :meth:`set_epoch` for a new random draw of
    offsets and crops. :attr:`stats` (also :meth:`report`) says what was skipped and why.
    ``probe_threads`` > 1 probes files in parallel while indexing.
    """

    def __init__(self, root: str | os.PathLike, config: Optional[VideoFolderConfig] = None, *,
                 seed: int = 0, epoch: int = 0, probe_threads: int = 1) -> None:
        self.config = config or VideoFolderConfig()
        for name, value in (("seed", seed), ("epoch", epoch), ("probe_threads", probe_threads)):
            if not is_int(value, 1 if name == "probe_threads" else 0):
                raise ConfigError(f"VideoFolderDataset {name} must be a "
                                  f"{'positive' if name == 'probe_threads' else 'non-negative'} int, got {value!r}")
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise InputError(f"video folder {self.root} does not exist or is not a folder")
        self.seed, self.epoch = seed, epoch
        self.stats = VideoFolderReport(root=str(self.root))
        self.entries: list[ClipEntry] = self._index(probe_threads)
        self._failed: set[int] = set()
        if not self.entries:
            raise InputError(f"no usable clips in {self.root}: {self.stats.summary()}")
        if self.stats.skipped or self.stats.unmatched_captions:
            logger.warning("video folder %s", self.stats.summary())
        else:
            logger.info("video folder %s", self.stats.summary())

    # --- indexing -------------------------------------------------------------------------------
    def _index(self, threads: int) -> list[ClipEntry]:
        config, stats = self.config, self.stats
        index = read_caption_index(self.root)
        candidates = _scan(self.root, config, index)
        stats.found = len(candidates)
        if _import_av() is None:
            needing = [c.key for c in candidates if not c.is_folder and c.path.suffix.lower() in PYAV_SUFFIXES]
            if needing:
                raise InputError(f"{len(needing)} clips in {self.root} (e.g. {needing[0]}) need the PyAV decoder: "
                                 f"{PYAV_EXTRA} (or pip install av). To use only the GIF/WebP/image files, "
                                 f"pass VideoFolderConfig(extensions=('.gif', '.webp', '.png', '.jpg', '.jpeg'))")
        captioned: list[tuple[_Candidate, str]] = []
        for candidate in candidates:
            sidecar_path = (candidate.path.parent / f"{candidate.path.name}.txt" if candidate.is_folder
                            else candidate.path.with_suffix(".txt"))
            caption = _read_sidecar(sidecar_path)
            if not caption:
                caption = index.get(_normalise_key(candidate.key), "")
            if caption:
                captioned.append((candidate, caption))
            else:
                stats.missing_caption.append(candidate.key)
        known = {_normalise_key(c.key) for c in candidates}
        stats.unmatched_captions = sorted(k for k in index if k not in known)

        def probe(item: tuple[_Candidate, str]) -> ClipEntry | tuple[str, str]:
            candidate, caption = item
            try:
                return _probe(candidate, caption, config)
            except Exception as exc:  # any decoder error means "unreadable"; never kills indexing
                logger.debug("cannot read %s", candidate.path, exc_info=True)
                return candidate.key, f"{type(exc).__name__}: {exc}"[:200]

        if threads > 1 and len(captioned) > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                probed = list(pool.map(probe, captioned))
        else:
            probed = [probe(item) for item in captioned]

        entries = []
        for result in probed:
            if isinstance(result, tuple):
                stats.corrupt.append(result)
                continue
            if result.kind == "image":
                if not config.include_images:
                    continue
                stats.images += 1
            else:
                if output_frame_count(result, config) < config.num_frames:
                    if config.short_clips == "skip":
                        stats.too_short.append(result.key)
                        continue
                    stats.padded += 1
                stats.videos += 1
            entries.append(result)
        return entries

    # --- dataset API --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Select a different (but reproducible) draw of offsets and crops."""
        if not is_int(epoch, 0):
            raise ConfigError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = epoch

    def report(self) -> VideoFolderReport:
        """What indexing found, plus the load failures seen in this process."""
        return self.stats

    def generator(self, index: int) -> np.random.Generator:
        """The random generator behind item ``index``."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.entries)
        index = int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for VideoFolderDataset of length {n}")
        for attempt in range(min(n, MAX_FALLBACKS)):
            j = (index + attempt) % n
            if j in self._failed:
                continue
            try:
                return self.load(j)
            except Exception as exc:  # a broken file must not stop training; it is logged and counted
                self._failed.add(j)
                reason = f"{type(exc).__name__}: {exc}"[:200]
                self.stats.load_failures.append((self.entries[j].key, reason))
                logger.warning("skipping %s (failed to load: %s); using the next clip", self.entries[j].path, reason)
        raise InputError(f"{MAX_FALLBACKS} clips in a row from index {index} of {self.root} failed to load; "
                         f"see the warnings above ({self.stats.summary()})")

    def load(self, index: int) -> dict[str, Any]:
        """Decode item ``index`` (no fallback: decoder errors propagate)."""
        entry, config = self.entries[index], self.config
        rng = self.generator(index)
        indices = sample_frame_indices(entry, config, rng)          # (n_real,)
        process = _FrameProcessor(config.image_size, config.crop, rng)
        truncated = False
        if entry.kind == "image":
            frames = [process(_open_still(entry.path))]
        elif entry.kind == "frames":
            cache: dict[int, np.ndarray] = {}
            for i in indices:
                if int(i) not in cache:
                    cache[int(i)] = process(_open_still(Path(entry.path) / entry.frames[int(i)]))
            frames = [cache[int(i)] for i in indices]
        elif entry.kind == "pil":
            frames = _decode_pil(entry, indices, process)
        else:
            frames, truncated = _decode_av(entry, indices, process)
        if truncated:
            self.stats.truncated.append(entry.key)
            logger.warning("%s has fewer frames than its metadata says; padded", entry.path)
        real = len(frames)
        frames = frames + [frames[-1]] * (config.num_frames - real)
        video = torch.from_numpy(np.stack(frames))                  # (f, h, w, c) uint8
        video = video.permute(3, 0, 1, 2).float().div_(255.0).contiguous()  # (c, f, h, w) in [0, 1]
        frame_mask = torch.arange(config.num_frames) < real         # (f,) bool
        return {"video": video, "caption": entry.caption, "frame_mask": frame_mask, "path": entry.path}


__all__ = [
    "ClipEntry", "VideoFolderConfig", "VideoFolderDataset", "VideoFolderReport", "read_caption_index",
    "sample_frame_indices", "output_frame_count", "PYAV_SUFFIXES", "SUPPORTED_SUFFIXES",
]

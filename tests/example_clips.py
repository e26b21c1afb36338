"""A small folder of captioned clips in every format a video folder reads, for the training tests
and the worked example in docs/training.md:

    python3 tests/example_clips.py my_clips

Coloured squares and discs moving across a dark background, in GIF (100 ms frames), animated
WebP (200 ms frames), MP4 (24 fps, if PyAV is installed; GIF otherwise) and numbered PNG frame folders, at
several sizes and aspect ratios; captions as sidecar .txt files and in captions.jsonl; plus one
broken file and one clip without a caption, which the folder probe reports and skips.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}
MOTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}


def frames(colour: str, shape: str, motion: str, n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """n frames (h, w, 3) uint8 of one object crossing the frame."""
    w, h = size
    r = max(2, min(w, h) // 6)
    dx, dy = MOTIONS[motion]
    ys, xs = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        t = i / max(1, n - 1) - 0.5                      # -0.5 .. 0.5 across the clip
        cx, cy = w / 2 + dx * t * (w - 3 * r), h / 2 + dy * t * (h - 3 * r)
        if shape == "square":
            inside = (abs(xs - cx) <= r) & (abs(ys - cy) <= r)
        else:
            inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
        frame = np.full((h, w, 3), 20, np.uint8)
        frame[inside] = COLOURS[colour]
        out.append(frame)
    return out


def caption(colour: str, shape: str, motion: str) -> str:
    return f"a {colour} {shape} moving {motion}"


def write_example_clips(root: str | Path, with_mp4: bool = True) -> Path:
    """Write the folder; returns its path. 16 captioned clips, 1 broken, 1 uncaptioned."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    index = []
    combos = [(c, ("square", "disc")[(ci + mi) % 2], m) for ci, c in enumerate(COLOURS) for mi, m in enumerate(MOTIONS)]
    try:
        import av  # noqa: F401  (optional: the mp4 clips need PyAV)
    except ImportError:
        with_mp4 = False
    for i, (colour, shape, motion) in enumerate(combos):
        name, kind = f"clip{i:02d}", ("gif", "webp", "mp4" if with_mp4 else "gif", "frames")[i % 4]
        size = ((96, 96), (160, 120), (64, 48), (80, 80))[i % 4]
        text = caption(colour, shape, motion)
        if kind == "gif":
            images = [Image.fromarray(f) for f in frames(colour, shape, motion, 24, size)]
            images[0].save(root / f"{name}.gif", save_all=True, append_images=images[1:], duration=100, loop=0)
            (root / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
        elif kind == "webp":
            images = [Image.fromarray(f) for f in frames(colour, shape, motion, 12, size)]
            images[0].save(root / f"{name}.webp", save_all=True, append_images=images[1:], duration=200, loop=0,
                           lossless=True)
            index.append({"file": f"{name}.webp", "caption": text})
        elif kind == "mp4":
            write_video_av(root / f"{name}.mp4", frames(colour, shape, motion, 60, size), fps=24)
            (root / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
        else:
            folder = root / "frames" / name
            folder.mkdir(parents=True, exist_ok=True)
            for j, frame in enumerate(frames(colour, shape, motion, 17, size)):
                Image.fromarray(frame).save(folder / f"{j:05d}.png")
            index.append({"file": f"frames/{name}", "caption": text})
    (root / "broken.gif").write_bytes(b"GIF89a" + bytes(range(256)))
    (root / "broken.txt").write_text("a broken clip\n", encoding="utf-8")
    images = [Image.fromarray(f) for f in frames("red", "disc", "up", 12, (64, 64))]
    images[0].save(root / "no_caption.gif", save_all=True, append_images=images[1:], duration=100, loop=0)
    (root / "captions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in index), encoding="utf-8")
    return root


def write_video_av(path: Path, video: list[np.ndarray], fps: int, codec: str = "mpeg4") -> None:
    """RGB uint8 frames (h, w, 3) -> a video file through PyAV (mp4, webm, ...)."""
    import av
    h, w = video[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 tests/example_clips.py FOLDER")
    print(f"wrote {write_example_clips(sys.argv[1])}")

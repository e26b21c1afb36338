"""VideoFolderDataset: real GIF / WebP / PNG-frame / image / MP4 files written into tmp folders."""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from phenaki_core.data import VideoFolderConfig, VideoFolderDataset, read_caption_index, sample_frame_indices
from phenaki_core.data import video_folder
from phenaki_core.errors import ConfigError, InputError

from example_clips import write_video_av

RED = (255, 0, 0)


# --- writing small real files -------------------------------------------------------------------

def marker_frames(n: int, size: tuple[int, int] = (16, 16)) -> list[np.ndarray]:
    """Frame i is (200, 5*i, 30): the green channel tells which source frame was decoded."""
    w, h = size
    return [np.full((h, w, 3), (200, 5 * i, 30), np.uint8) for i in range(n)]


def write_gif(path, frames, duration_ms: int = 50) -> None:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


def write_webp(path, frames, duration_ms: int = 50) -> None:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0, lossless=True)


def write_caption(path, text: str) -> None:
    path.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")


def frame_ids(item) -> list[int]:
    """Decode the marker of each output frame (green / 5)."""
    return [int(round(v)) for v in (item["video"][1, :, 2, 2] * 255 / 5).tolist()]


def cfg(**changes) -> VideoFolderConfig:
    base = dict(image_size=8, num_frames=5, fps=None, offset="start")
    base.update(changes)
    return VideoFolderConfig(**base)


# --- config ---------------------------------------------------------------------------------------

def test_config_validation():
    with pytest.raises(ConfigError, match="1 \\+ k \\* temporal_patch"):
        VideoFolderConfig(num_frames=8, temporal_patch=2)
    for bad in ({"fps": 0}, {"fps": float("nan")}, {"folder_fps": None}, {"offset": "middle"},
                {"crop": "none"}, {"short_clips": "drop"}, {"image_size": 0}, {"include_images": 1},
                {"extensions": (".avi",)}, {"extensions": ".gif"}, {"verify": "full"}):
        with pytest.raises(ConfigError):
            VideoFolderConfig(**bad)
    assert VideoFolderConfig(extensions=("GIF", ".png")).extensions == (".gif", ".png")
    assert VideoFolderConfig(num_frames=1).num_frames == 1


def test_config_for_model():
    from phenaki_core import preset
    model_config = preset("tiny")
    config = VideoFolderConfig.for_model(model_config, num_frames=5)
    assert config.image_size == model_config.cvivit.image_size
    assert config.temporal_patch == model_config.cvivit.temporal_patch_size
    assert config.fps == float(model_config.fps) and config.num_frames == 5


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        VideoFolderDataset(tmp_path / "nope")
    with pytest.raises(InputError, match="no usable clips"):
        VideoFolderDataset(tmp_path)


# --- decoding: values, layout, RGB ----------------------------------------------------------------

def test_gif_is_rgb_float_cfhw(tmp_path):
    frames = [np.full((12, 20, 3), RED, np.uint8) for _ in range(5)]
    frames = [f.copy() for f in frames]
    for i, f in enumerate(frames):
        f[0, 0] = (255, 0, i)  # keep frames distinct so the GIF writer keeps them all
    write_gif(tmp_path / "red.gif", frames)
    write_caption(tmp_path / "red.gif", "  a red   square ")
    ds = VideoFolderDataset(tmp_path, cfg())
    item = ds[0]
    assert set(item) == {"video", "caption", "frame_mask", "path"}
    video = item["video"]
    assert video.dtype == torch.float32 and video.shape == (3, 5, 8, 8)
    assert video.min() >= 0 and video.max() <= 1
    centre = video[:, :, 2:6, 2:6]
    assert torch.all(centre[0] > 0.95) and torch.all(centre[1:] < 0.05)  # RGB, not BGR; 0..1, not 0..255
    assert item["caption"] == "a red square"
    assert item["frame_mask"].dtype == torch.bool and item["frame_mask"].all()
    assert item["path"] == str(tmp_path / "red.gif")


@pytest.mark.parametrize("suffix", [".webp", ".gif"])
def test_per_frame_durations_are_honoured_in_webp_as_in_gif(suffix, tmp_path):
    """Frames of 200, 200, 100, 100, 400 ms read at 10 fps: source frames 0 0 1 1 2 3 4 4 4 4.
    The WebP's timing comes from its container, as the GIF's does (Pillow reports a WebP frame's
    duration only once its pixels are decoded)."""
    images = [Image.fromarray(f) for f in marker_frames(5)]
    kwargs = {"lossless": True} if suffix == ".webp" else {}
    images[0].save(tmp_path / f"clip{suffix}", save_all=True, append_images=images[1:],
                   duration=[200, 200, 100, 100, 400], loop=0, **kwargs)
    write_caption(tmp_path / f"clip{suffix}", "a clip")
    ds = VideoFolderDataset(tmp_path, cfg(num_frames=11, fps=10.0))
    entry = ds.entries[0]
    assert entry.kind == "pil" and entry.duration == pytest.approx(1.0)
    item = ds[0]
    assert frame_ids(item)[:10] == [0, 0, 1, 1, 2, 3, 4, 4, 4, 4]
    assert item["frame_mask"].tolist() == [True] * 10 + [False]


def test_animated_webp_and_stills_mixed(tmp_path):
    write_webp(tmp_path / "clip.webp", marker_frames(6))
    write_caption(tmp_path / "clip.webp", "a clip")
    Image.new("RGB", (10, 10), (0, 0, 255)).save(tmp_path / "blue.png")
    write_caption(tmp_path / "blue.png", "a blue image")
    Image.new("RGB", (10, 14), (0, 255, 0)).save(tmp_path / "green.jpg", quality=95)
    write_caption(tmp_path / "green.jpg", "a green image")
    Image.new("RGB", (9, 9), (255, 0, 0)).save(tmp_path / "still.webp", lossless=True)
    write_caption(tmp_path / "still.webp", "a red image")
    ds = VideoFolderDataset(tmp_path, cfg())
    assert ds.stats.videos == 1 and ds.stats.images == 3 and len(ds) == 4
    items = {os.path.basename(ds[i]["path"]): ds[i] for i in range(len(ds))}
    assert frame_ids(items["clip.webp"]) == [0, 1, 2, 3, 4]
    for name, channel in (("blue.png", 2), ("green.jpg", 1), ("still.webp", 0)):
        item = items[name]
        assert item["video"].shape == (3, 5, 8, 8)
        assert item["frame_mask"].tolist() == [True, False, False, False, False]
        assert torch.equal(item["video"][:, 1:], item["video"][:, :1].expand(-1, 4, -1, -1))
        assert item["video"][channel].mean() > 0.9
    batch = next(iter(DataLoader(ds, batch_size=4)))  # images and clips stack in one batch
    assert batch["video"].shape == (4, 3, 5, 8, 8) and batch["frame_mask"].shape == (4, 5)
    assert len(VideoFolderDataset(tmp_path, cfg(include_images=False))) == 1


def test_frame_folder_numeric_order_and_fps(tmp_path):
    clip = tmp_path / "dance"
    clip.mkdir()
    for i, frame in enumerate(marker_frames(12)):
        Image.fromarray(frame).save(clip / f"frame_{i}.png")  # frame_10 must sort after frame_9
    (tmp_path / "dance.txt").write_text("dancing", encoding="utf-8")
    ds = VideoFolderDataset(tmp_path, cfg(num_frames=5, fps=8, folder_fps=16))
    assert len(ds) == 1 and ds.entries[0].kind == "frames"
    assert ds[0]["caption"] == "dancing"
    assert frame_ids(ds[0]) == [0, 2, 4, 6, 8]  # 16 fps read at 8 fps: every other frame
    ds = VideoFolderDataset(tmp_path, cfg(num_frames=11, fps=None))
    assert frame_ids(ds[0]) == list(range(11))


def test_numbered_images_with_own_captions_are_stills(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(folder / f"img{i}.png")
        write_caption(folder / f"img{i}.png", f"photo {i}")
    ds = VideoFolderDataset(tmp_path, cfg())
    assert len(ds) == 3 and {e.kind for e in ds.entries} == {"image"}
    assert len(VideoFolderDataset(tmp_path, cfg(frame_folders=False))) == 3


# --- timing ---------------------------------------------------------------------------------------

def test_fps_sampling_gif(tmp_path):
    write_gif(tmp_path / "a.gif", marker_frames(20), duration_ms=50)  # 20 fps
    write_caption(tmp_path / "a.gif", "markers")
    assert frame_ids(VideoFolderDataset(tmp_path, cfg(num_frames=9, fps=10))[0]) == [0, 2, 4, 6, 8, 10, 12, 14, 16]
    assert frame_ids(VideoFolderDataset(tmp_path, cfg(num_frames=9, fps=None))[0]) == list(range(9))
    # slower target than source and faster: 40 fps shows each 20 fps frame twice
    assert frame_ids(VideoFolderDataset(tmp_path, cfg(num_frames=9, fps=40))[0]) == [0, 0, 1, 1, 2, 2, 3, 3, 4]


def test_gif_variable_frame_durations(tmp_path):
    images = [Image.fromarray(f) for f in marker_frames(3)]
    images[0].save(tmp_path / "v.gif", save_all=True, append_images=images[1:], duration=[200, 100, 100], loop=0)
    write_caption(tmp_path / "v.gif", "uneven")
    ds = VideoFolderDataset(tmp_path, cfg(num_frames=7, fps=20))
    item = ds[0]  # 0.4 s at 20 fps = 8 frames: frame 0 shown for 0.2 s, then 1, then 2
    assert frame_ids(item) == [0, 0, 0, 0, 1, 1, 2] and item["frame_mask"].all()


def test_random_offsets_are_deterministic(tmp_path):
    write_gif(tmp_path / "long.gif", marker_frames(40), duration_ms=50)
    write_caption(tmp_path / "long.gif", "long")
    config = cfg(num_frames=5, fps=10, offset="random")
    a = VideoFolderDataset(tmp_path, config, seed=3)
    b = VideoFolderDataset(tmp_path, config, seed=3)
    assert torch.equal(a[0]["video"], b[0]["video"])
    starts = set()
    for epoch in range(12):
        a.set_epoch(epoch)
        ids = frame_ids(a[0])
        assert ids == list(range(ids[0], ids[0] + 10, 2))  # always a valid 10 fps window
        assert 0 <= ids[0] <= 40 - 9
        starts.add(ids[0])
    assert len(starts) > 3  # epochs draw different offsets
    a.set_epoch(5)
    b.set_epoch(5)
    assert frame_ids(a[0]) == frame_ids(b[0])
    assert frame_ids(VideoFolderDataset(tmp_path, cfg(num_frames=5, fps=10, offset="center"))[0])[0] == 15
    with pytest.raises(ConfigError):
        a.set_epoch(-1)


def test_sample_frame_indices_uses_generator_only():
    entry = video_folder.ClipEntry("x.gif", "x.gif", "pil", "c", 30, 10.0, 3.0)
    config = cfg(num_frames=5, fps=5, offset="random")
    state = np.random.get_state()
    first = sample_frame_indices(entry, config, np.random.default_rng([1, 0, 0]))
    assert np.array_equal(first, sample_frame_indices(entry, config, np.random.default_rng([1, 0, 0])))
    assert np.array_equal(np.diff(first), [2, 2, 2, 2])
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # global RNG untouched


# --- space ----------------------------------------------------------------------------------------

def _stripes(path, vertical: bool = False) -> None:
    """48x16 (or 16x48) image: red | green | blue thirds along the long side."""
    array = np.zeros((16, 48, 3), np.uint8)
    array[:, :16] = (255, 0, 0)
    array[:, 16:32] = (0, 255, 0)
    array[:, 32:] = (0, 0, 255)
    if vertical:
        array = array.transpose(1, 0, 2).copy()
    Image.fromarray(array).save(path)


def test_resize_shorter_side_then_centre_crop(tmp_path):
    _stripes(tmp_path / "wide.png")
    _stripes(tmp_path / "tall.png", vertical=True)
    for name in ("wide.png", "tall.png"):
        write_caption(tmp_path / name, "stripes")
    ds = VideoFolderDataset(tmp_path, cfg(image_size=8))
    for i in range(2):
        frame = ds[i]["video"][:, 0]  # (c, h, w)
        assert frame.shape == (3, 8, 8)
        assert frame[1].min() > 0.9 and frame[0].max() < 0.1 and frame[2].max() < 0.1  # the green middle


def test_random_crop_is_per_clip_and_seeded(tmp_path):
    _stripes(tmp_path / "wide.png")
    write_caption(tmp_path / "wide.png", "stripes")
    seen = set()
    ds = VideoFolderDataset(tmp_path, cfg(image_size=8, crop="random"), seed=0)
    for epoch in range(20):
        ds.set_epoch(epoch)
        frame = ds[0]["video"][:, 0]
        seen.add(int(frame.mean(dim=(1, 2)).argmax()))
        again = VideoFolderDataset(tmp_path, cfg(image_size=8, crop="random"), seed=0, epoch=epoch)
        assert torch.equal(again[0]["video"], ds[0]["video"])
    assert seen == {0, 1, 2}  # crops land on each third at some epoch


# --- short clips ------------------------------------------------------------------------------------

def test_short_clip_pad_and_skip(tmp_path):
    write_gif(tmp_path / "short.gif", marker_frames(3), duration_ms=50)
    write_caption(tmp_path / "short.gif", "short")
    write_gif(tmp_path / "long.gif", marker_frames(8), duration_ms=50)
    write_caption(tmp_path / "long.gif", "long")
    pad = VideoFolderDataset(tmp_path, cfg(num_frames=5))
    assert len(pad) == 2 and pad.stats.padded == 1
    short = next(pad[i] for i in range(2) if pad[i]["path"].endswith("short.gif"))
    assert short["frame_mask"].tolist() == [True, True, True, False, False]
    assert frame_ids(short) == [0, 1, 2, 2, 2]  # padding repeats the last real frame
    skip = VideoFolderDataset(tmp_path, cfg(num_frames=5, short_clips="skip"))
    assert len(skip) == 1 and skip.stats.too_short == ["short.gif"]
    assert skip[0]["path"].endswith("long.gif")
    # at 10 fps the 8-frame 20 fps clip lasts 4 output frames: both are short, nothing is left
    with pytest.raises(InputError, match="no usable clips"):
        VideoFolderDataset(tmp_path, cfg(num_frames=5, fps=10, short_clips="skip"))


# --- captions ---------------------------------------------------------------------------------------

def _three_gifs(root) -> None:
    (root / "sub").mkdir()
    for name in ("a.gif", "b.gif", "sub/c.gif"):
        write_gif(root / name, marker_frames(5))


def test_captions_jsonl(tmp_path):
    _three_gifs(tmp_path)
    lines = [{"file": "a.gif", "caption": "from jsonl a"}, {"file": "./sub/c.gif", "caption": "from jsonl c"},
             {"file": "gone.gif", "caption": "nobody"}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    write_caption(tmp_path / "a.gif", "sidecar a")  # the sidecar wins
    ds = VideoFolderDataset(tmp_path, cfg())
    captions = {e.key: e.caption for e in ds.entries}
    assert captions == {"a.gif": "sidecar a", "sub/c.gif": "from jsonl c"}
    assert ds.stats.missing_caption == ["b.gif"] and ds.stats.unmatched_captions == ["gone.gif"]


def test_captions_csv(tmp_path):
    _three_gifs(tmp_path)
    (tmp_path / "captions.csv").write_text('file,caption,extra\na.gif,"a, with a comma",1\nb.gif,b csv,2\n'
                                           'sub/c.gif,   ,3\n', encoding="utf-8")
    ds = VideoFolderDataset(tmp_path, cfg())
    assert {e.key: e.caption for e in ds.entries} == {"a.gif": "a, with a comma", "b.gif": "b csv"}
    assert ds.stats.missing_caption == ["sub/c.gif"]  # blank caption = none


def test_caption_index_errors(tmp_path):
    (tmp_path / "captions.jsonl").write_text('{"file": "a.gif", "caption": "ok"}\n{not json}\n', encoding="utf-8")
    with pytest.raises(InputError, match="line 2"):
        read_caption_index(tmp_path)
    (tmp_path / "captions.jsonl").write_text('{"path": "a.gif"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="'file'"):
        read_caption_index(tmp_path)
    (tmp_path / "captions.csv").write_text("file,caption\n", encoding="utf-8")
    with pytest.raises(InputError, match="both"):
        read_caption_index(tmp_path)
    (tmp_path / "captions.jsonl").unlink()
    (tmp_path / "captions.csv").write_text("name,text\na.gif,x\n", encoding="utf-8")
    with pytest.raises(InputError, match="header"):
        read_caption_index(tmp_path)


def test_missing_captions_are_counted_and_logged(tmp_path, caplog):
    _three_gifs(tmp_path)
    write_caption(tmp_path / "b.gif", "only b")
    with caplog.at_level(logging.WARNING, logger="phenaki_core.data.video_folder"):
        ds = VideoFolderDataset(tmp_path, cfg())
    assert len(ds) == 1 and sorted(ds.report().missing_caption) == ["a.gif", "sub/c.gif"]
    assert "2 without a caption" in caplog.text


# --- corrupt files ----------------------------------------------------------------------------------

def _truncated_png(path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not


def test_corrupt_files_are_skipped_and_counted(tmp_path, caplog):
    write_gif(tmp_path / "good.gif", marker_frames(5))
    write_caption(tmp_path / "good.gif", "good")
    (tmp_path / "x.gif").write_bytes(os.urandom(300))
    write_caption(tmp_path / "x.gif", "random bytes")
    (tmp_path / "empty.webp").write_bytes(b"")
    write_caption(tmp_path / "empty.webp", "empty")
    _truncated_png(tmp_path / "trunc.png")
    write_caption(tmp_path / "trunc.png", "truncated")
    with caplog.at_level(logging.WARNING, logger="phenaki_core.data.video_folder"):
        ds = VideoFolderDataset(tmp_path, cfg())
    assert sorted(p for p, _ in ds.stats.corrupt) == ["empty.webp", "x.gif"]
    assert "2 unreadable" in caplog.text
    assert len(ds) == 2  # the truncated PNG passes the header probe ...
    items = [ds[i] for i in range(len(ds))]  # ... and fails at load time without raising
    assert all(item["path"].endswith("good.gif") for item in items)
    assert [p for p, _ in ds.report().load_failures] == ["trunc.png"]
    assert "failed to load" in caplog.text
    strict = VideoFolderDataset(tmp_path, cfg(verify="decode"))  # full decode excludes it up front
    assert len(strict) == 1 and sorted(p for p, _ in strict.stats.corrupt) == ["empty.webp", "trunc.png", "x.gif"]


def test_all_failing_raises_clear_error(tmp_path):
    _truncated_png(tmp_path / "trunc.png")
    write_caption(tmp_path / "trunc.png", "truncated")
    ds = VideoFolderDataset(tmp_path, cfg())
    with pytest.raises(InputError, match="failed to load"):
        ds[0]


# --- decoders: PyAV missing / present -----------------------------------------------------------------

def test_pyav_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    write_gif(tmp_path / "a.gif", marker_frames(5))
    write_caption(tmp_path / "a.gif", "gif")
    assert len(VideoFolderDataset(tmp_path, cfg())) == 1  # Pillow path needs no av
    (tmp_path / "b.mp4").write_bytes(b"\x00" * 64)
    write_caption(tmp_path / "b.mp4", "mp4")
    with pytest.raises(InputError, match=r'pip install "phenaki-comfyui\[video\]"'):
        VideoFolderDataset(tmp_path, cfg())
    ds = VideoFolderDataset(tmp_path, cfg(extensions=(".gif",)))  # the escape hatch the error names
    assert len(ds) == 1


def _write_av(path, frames: list[np.ndarray], fps: int, codec: str = "libx264") -> None:
    pytest.importorskip("av")
    write_video_av(path, frames, fps, codec)


def test_mp4_red_and_fps(tmp_path):
    pytest.importorskip("av")
    _write_av(tmp_path / "red.mp4", [np.full((16, 16, 3), RED, np.uint8)] * 9, fps=8)
    write_caption(tmp_path / "red.mp4", "red video")
    item = VideoFolderDataset(tmp_path, cfg(num_frames=9, fps=8))[0]
    video = item["video"]
    assert video.shape == (3, 9, 8, 8) and item["frame_mask"].all()
    assert video[0].min() > 0.9 and video[1:].max() < 0.1  # RGB order survives YUV
    (tmp_path / "red.mp4").unlink()
    grey = [np.full((16, 16, 3), 5 * i, np.uint8) for i in range(48)]  # 3 s at 16 fps
    _write_av(tmp_path / "markers.mp4", grey, fps=16)
    write_caption(tmp_path / "markers.mp4", "markers")
    ds = VideoFolderDataset(tmp_path, cfg(num_frames=9, fps=8, offset="random"), seed=1)
    assert ds.entries[0].num_frames == 48 and ds.entries[0].fps == 16
    for epoch in range(4):  # later offsets seek into the file
        ds.set_epoch(epoch)
        got = frame_ids(ds[0])
        expected = sample_frame_indices(ds.entries[0], ds.config, ds.generator(0)).tolist()
        assert got == expected and got == list(range(got[0], got[0] + 18, 2))


def test_webm_and_random_bytes_mp4(tmp_path):
    pytest.importorskip("av")
    _write_av(tmp_path / "clip.webm", marker_frames(10), fps=10, codec="libvpx-vp9")
    write_caption(tmp_path / "clip.webm", "webm")
    (tmp_path / "x.mp4").write_bytes(os.urandom(2000))
    write_caption(tmp_path / "x.mp4", "noise")
    ds = VideoFolderDataset(tmp_path, cfg(num_frames=5, fps=5))
    assert [p for p, _ in ds.stats.corrupt] == ["x.mp4"]
    item = ds[0]
    assert item["frame_mask"].all() and item["video"][0].mean() > 0.7  # (200, 5i, 30): red dominates
    ids = [int(round(v)) for v in (item["video"][1, :, 4, 4] * 255 / 5).tolist()]
    assert max(abs(a - b) for a, b in zip(ids, [0, 2, 4, 6, 8])) <= 1  # lossy codec: within one step


# --- loading --------------------------------------------------------------------------------------

def test_dataloader_workers_and_pickle(tmp_path):
    for i in range(4):
        write_gif(tmp_path / f"c{i}.gif", marker_frames(6 + i))
        write_caption(tmp_path / f"c{i}.gif", f"clip {i}")
    ds = VideoFolderDataset(tmp_path, cfg(num_frames=5, offset="random"), seed=7)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[2]["video"], ds[2]["video"])
    loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert [b["video"].shape for b in batches] == [(2, 3, 5, 8, 8)] * 2
    paths = [p for b in batches for p in b["path"]]
    assert len(set(paths)) == 4  # each index is one file, each loaded once
    assert torch.equal(torch.cat([b["video"] for b in batches]), torch.stack([ds[i]["video"] for i in range(4)]))

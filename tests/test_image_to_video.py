"""Image to video through the nodes: one picture (Load Image's IMAGE, one frame) -> Encode Video -> a
one-frame prime -> Sample Scene (prime_frames 1) -> Decode; the pack's example picture, which the
pack copies into ComfyUI's input folder so the image-to-video template runs as opened; and how
well the bundled model follows the prompt after a one-frame prime (slow: ``-m slow``).

    OMP_NUM_THREADS=1 python -m pytest -q -m slow tests/test_image_to_video.py -s
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from phenaki_core.data.captions import COLOURS, MOTIONS, SHAPES, canonical_caption
from phenaki_core.data.shapes_world import render_video
from phenaki_core.evaluation.shapes_judge import read_clip, score_readings
from phenaki_core.pipeline import BUNDLED_CHECKPOINT

from helpers import ROOT, chain_scenes, decode, encode_text, encode_video, load_model, pack_parts, run, sample_scene

pack, nodes, glue, adapter = pack_parts()
PICTURE = ROOT / "nodes" / "example_clips" / "phenaki_example_image.png"


def still(colour: str, shape: str, size: int = 64) -> torch.Tensor:
    """One Shapes World frame as Load Image gives it: IMAGE [1, size, size, 3], the object (half-extent 7,
    at 64 px) in the middle, still."""
    scale = size / 64
    video = render_video(shape, colour, np.array([[32.0 * scale, 32.0 * scale]]), np.array([7.0 * scale]), size)
    return torch.from_numpy(video).permute(1, 2, 3, 0)


def load_image(path) -> torch.Tensor:
    """Load Image's IMAGE for a still picture: [1, H, W, 3] float32 in 0..1."""
    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255)[None]


# --- one picture as a one-frame prime (tiny model) ------------------------------------------------------
def test_one_picture_is_a_one_frame_prime_that_a_scene_continues(model, cond):
    picture = load_image(PICTURE)
    tokens, report = run("PhenakiEncodeVideo", model=model, images=picture)
    assert tokens.num_frames == 1 and tokens.ids.shape == (1, 1, 2, 2)
    assert report == "Phenaki Encode Video: kept the one frame; 64x64 resized to 8x8"
    scene = sample_scene(model, cond, frames=17, prime=tokens, prime_frames=1, seed=3)
    assert scene.num_frames == 17 and scene.prime_frames == 1
    assert torch.equal(scene.ids[:, :1], tokens.ids)  # the picture's own tokens start the clip
    images, fps = decode(scene)
    assert images.shape == (17, 8, 8, 3) and fps == 8.0
    assert decode(scene, include_prime=False)[0].shape == (16, 8, 8, 3)
    again = sample_scene(model, cond, frames=17, prime=tokens, prime_frames=1, seed=3)
    assert torch.equal(again.ids, scene.ids)  # same seed, same frames


def test_a_story_can_start_from_one_picture(model):
    tokens = encode_video(model, load_image(PICTURE))
    images, _, starts = chain_scenes(model, "a blue square moving right\na blue square moving up", frames=9,
                                     prime_frames=1, prime=tokens)
    assert images.shape == (8 + 8, 8, 8, 3) and starts == "0,8"  # the picture's frame is the prime, not output


@pytest.mark.parametrize("crop", glue.CROP_MODES)
def test_a_picture_of_any_shape_primes_with_every_crop_mode(model, cond, crop):
    wide = torch.rand(1, 48, 128, 4)  # RGBA, 128x48
    tokens = encode_video(model, wide, crop=crop)
    assert tokens.num_frames == 1 and tokens.source.shape == (1, 3, 1, 8, 8)
    assert sample_scene(model, cond, frames=5, prime=tokens, prime_frames=1).num_frames == 5


def test_a_longer_prime_than_one_picture_says_to_use_one_frame(model, cond):
    tokens = encode_video(model, load_image(PICTURE))
    message = r"prime_frames \(5\) is longer than the prime clip \(1 frame\); use at most 1"
    with pytest.raises(ValueError, match=message):
        sample_scene(model, cond, frames=17, prime=tokens, prime_frames=5)


# --- the pack's example picture and ComfyUI's input folder ---------------------------------------------
def test_the_example_picture_is_a_shapes_world_frame_the_template_prompts_for():
    assert PICTURE == glue.EXAMPLE_IMAGE
    with Image.open(PICTURE) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (64, 64)  # the bundled model's size
    picture = load_image(PICTURE)
    assert torch.allclose(picture, still("blue", "square"), atol=0.5 / 255)
    reading = read_clip(picture.numpy())
    assert (reading.colour, reading.shape) == ("blue", "square")


def test_the_example_picture_is_copied_into_the_input_folder_once(tmp_path, caplog):
    target = tmp_path / "input" / PICTURE.name
    with caplog.at_level(logging.INFO):
        assert glue.provide_example_image(str(tmp_path / "input")) == target
    assert target.read_bytes() == PICTURE.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == [PICTURE.name]  # no partial file left
    stamp = target.stat().st_mtime_ns
    assert glue.provide_example_image(str(tmp_path / "input")) == target  # idempotent: not written again
    assert target.stat().st_mtime_ns == stamp
    assert glue.provide_example_image(None) is None  # outside ComfyUI there is no input folder


def test_a_file_of_that_name_in_the_input_folder_is_never_overwritten(tmp_path):
    target = tmp_path / PICTURE.name
    target.write_bytes(b"the user's own picture")
    assert glue.provide_example_image(str(tmp_path)) == target
    assert target.read_bytes() == b"the user's own picture"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a folder this user cannot write")
def test_an_input_folder_that_cannot_be_written_is_one_warning(tmp_path, caplog):
    tmp_path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with caplog.at_level(logging.WARNING):
            assert glue.provide_example_image(str(tmp_path)) is None
    finally:
        tmp_path.chmod(stat.S_IRWXU)
    (record,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "\n" not in record.getMessage() and "Load Image" in record.getMessage()


def test_read_only_input_folder_is_one_warning_whoever_runs_it(tmp_path, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(glue.shutil, "copyfile", refuse)
    with caplog.at_level(logging.WARNING):
        assert glue.provide_example_image(str(tmp_path)) is None
    assert not list(tmp_path.iterdir())
    assert caplog.records[-1].levelname == "WARNING" and "Permission denied" in caplog.records[-1].getMessage()


def test_comfyui_loading_the_pack_registers_the_model_folder_and_provides_the_picture(tmp_path, monkeypatch):
    """What comfy_entrypoint does when ComfyUI loads the pack (before it asks for the nodes)."""
    registered = []
    monkeypatch.setattr(adapter, "register_model_folder", lambda: registered.append(True))
    monkeypatch.setattr(adapter, "input_directory", lambda: str(tmp_path))
    extension = asyncio.run(pack.comfy_entrypoint())
    assert registered == [True] and (tmp_path / PICTURE.name).read_bytes() == PICTURE.read_bytes()
    assert len(asyncio.run(extension.get_node_list())) == 7


# --- the bundled model: prompt following after a one-frame prime (slow) ---------------------------------
def image_to_video_following(model, seeds=(0, 1), steps: int = 18) -> dict:
    """Every canonical prompt (8 colours x 3 shapes x 7 motions) after a one-frame prime: a still of that
    colour and shape, in the middle of the frame, through Encode Video -> Sample Scene (17 frames, prime
    1) -> Decode, with the nodes' default sampling; the Shapes World judge reads the 17 frames."""
    readings, targets = [], []
    for colour in COLOURS:
        for shape in SHAPES:
            prime = encode_video(model, still(colour, shape))
            for motion in MOTIONS:
                cond = encode_text(model, canonical_caption(colour, shape, motion))
                for seed in seeds:
                    tokens = sample_scene(model, cond, frames=17, steps=steps, prime=prime, prime_frames=1,
                                          seed=seed)
                    readings.append(read_clip(decode(tokens)[0].numpy()))
                    targets.append((colour, shape, motion))
    scores = score_readings(readings, targets)
    scores["motion_by_prompt"] = {m: float(np.mean([r.motion == m for r, t in zip(readings, targets) if t[2] == m]))
                                  for m in MOTIONS}
    scores["motion_read_as"] = {m: dict(Counter(r.motion for r, t in zip(readings, targets) if t[2] == m))
                                for m in MOTIONS}
    return scores


@pytest.mark.slow
@pytest.mark.skipif(not BUNDLED_CHECKPOINT.is_file(), reason="the bundled model is not in phenaki_core/weights")
def test_the_bundled_model_follows_the_prompt_after_a_one_frame_prime():
    torch.set_num_threads(1)
    model = load_model("(bundled) shapes64", "cpu", "fp32")
    with torch.no_grad():
        scores = image_to_video_following(model)
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in scores.items()})
    assert scores["n"] == 8 * 3 * 7 * 2 and scores["blank"] == 0
    assert scores["colour"] >= 0.97 and scores["shape"] >= 0.95 and scores["motion"] >= 0.95  # measured: 100, 97.9, 97.3%

"""The ComfyUI nodes, called in-process outside ComfyUI (the adapter's fallbacks), on a tiny model:
what each node makes, its progress and previews, and the pack's shape. Bad input to the nodes is
in test_bad_inputs_nodes.py.

The pack is imported the way ComfyUI imports it: its root ``__init__.py`` as a package, so that
``nodes/`` and its copy of ``phenaki_core`` are subpackages (relative imports only).
"""

from __future__ import annotations

import pytest
import torch

from phenaki_core import MINILM_SPEC, SamplerConfig
from phenaki_core.sampling import REMASK_MODES

from helpers import ROOT, STEPS, chain_scenes, decode, encode_video, pack_parts, sample_scene

pack, nodes, glue, adapter = pack_parts()


class FakeProgressBar:
    def __init__(self, total):
        self.total = total
        self.updates = []

    def update_absolute(self, value, total=None, preview=None):
        self.updates.append((value, preview))


@pytest.fixture
def progress(monkeypatch):
    """Record every progress bar the nodes make, with previews switched on."""
    bars = []

    def make(total):
        bars.append(FakeProgressBar(total))
        return bars[-1]

    monkeypatch.setattr(adapter, "ProgressBar", make)
    monkeypatch.setattr(adapter, "previews_enabled", lambda: True)
    return bars


# --- the pack --------------------------------------------------------------------------------------
def test_mappings_are_prefixed_and_complete():
    expected = {"PhenakiLoader", "PhenakiEncodeText", "PhenakiSampleScene", "PhenakiChainScenes",
                "PhenakiEncodeVideo", "PhenakiDecode", "PhenakiExampleClip"}
    assert set(nodes) == expected
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == expected
    for name, cls in nodes.items():
        assert callable(getattr(cls(), cls.FUNCTION)), name
        assert cls.CATEGORY == "Phenaki"
        assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
        assert "required" in cls.INPUT_TYPES()
    for name in ("PhenakiSampleScene", "PhenakiChainScenes"):
        seed = nodes[name].INPUT_TYPES()["required"]["seed"]
        assert seed[0] == "INT" and seed[1]["control_after_generate"] is True and seed[1]["max"] == 2**64 - 1


def test_every_input_and_output_has_a_tooltip():
    for name, cls in nodes.items():
        for section, inputs in cls.INPUT_TYPES().items():
            for input_name, (_kind, *options) in inputs.items():
                assert options and options[0].get("tooltip"), f"{name}.{input_name} has no tooltip"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES), f"{name}: a tooltip per output"
        assert all(cls.OUTPUT_TOOLTIPS) and cls.DESCRIPTION, name


SEARCHES = {  # what a user types into the node search -> the nodes it must find
    "text to video": {"PhenakiSampleScene", "PhenakiChainScenes", "PhenakiEncodeText"},
    "t2v": {"PhenakiSampleScene", "PhenakiChainScenes"},
    "story": {"PhenakiChainScenes"},
    "video": {"PhenakiSampleScene", "PhenakiChainScenes", "PhenakiEncodeVideo", "PhenakiDecode"},
    "continue": {"PhenakiSampleScene", "PhenakiEncodeVideo"},
}


def searchable(cls, node_id: str) -> str:
    """What ComfyUI's frontend searches: the node's id, display name and search aliases (SEARCH_ALIASES)."""
    return " | ".join([node_id, pack.NODE_DISPLAY_NAME_MAPPINGS[node_id], *cls.SEARCH_ALIASES]).lower()


@pytest.mark.parametrize("query", list(SEARCHES))
def test_the_node_search_finds_the_right_nodes(query):
    found = {node_id for node_id, cls in nodes.items() if query in searchable(cls, node_id)}
    assert SEARCHES[query] <= found, f"{query!r} finds {sorted(found)}"


def test_nodes_is_never_installed_as_a_package():
    """ComfyUI has a top-level ``nodes`` module; an installed ``nodes`` package would shadow it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert all(entry.startswith("phenaki_core") for entry in setuptools["include"])


def test_adapter_fallbacks_outside_comfyui():
    assert adapter.IN_COMFYUI is False
    assert adapter.intermediate_device() == torch.device("cpu")
    assert adapter.intermediate_dtype() == torch.float32
    assert adapter.load_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert adapter.manage_modules(torch.nn.Linear(1, 1), torch.device("cpu"), torch.device("cpu")) is None
    adapter.check_interrupted()  # a no-op
    assert adapter.previews_enabled() is False
    bar = adapter.ProgressBar(3)
    for step in range(1, 4):
        bar.update_absolute(step, 3, None)


# --- Load Phenaki ----------------------------------------------------------------------------------
def test_loader_lists_bundled_model_and_safetensors_only(model_dir):
    choices = nodes["PhenakiLoader"].INPUT_TYPES()["required"]["ckpt_name"][0]
    assert choices[0] == "(bundled) shapes64"
    assert "tiny.safetensors" in choices and "sub/other.safetensors" in choices
    assert not any(name.endswith((".pt", ".txt")) for name in choices)


def test_loader_reuses_a_loaded_checkpoint(model):
    (again,) = nodes["PhenakiLoader"]().load("tiny.safetensors", "cpu", "fp32")
    assert again is model
    assert model.load_device == torch.device("cpu") and model.dtype == torch.float32
    assert model.text_spec.to_dict() == MINILM_SPEC.to_dict()  # the pack's own copy of the class


# --- Encode Text -----------------------------------------------------------------------------------
def test_encode_text_gives_a_cpu_cond_with_optional_negative(model, cond):
    assert cond.text.embeds.shape[0] == 1 and cond.text.embeds.shape[2] == 384
    assert cond.text.embeds.device.type == "cpu" and cond.negative is None
    assert cond.encoder.to_dict() == MINILM_SPEC.to_dict()
    (with_negative,) = nodes["PhenakiEncodeText"]().encode(model, "a red\ncircle", "a blue square")
    assert with_negative.prompt == "a red circle" and with_negative.negative is not None


# --- Sample Scene ----------------------------------------------------------------------------------
def test_sample_scene_makes_tokens_that_reproduce_with_the_seed(model, cond):
    tokens = sample_scene(model, cond, frames=9, seed=5)
    assert tokens.ids.shape == (1, 5, 2, 2) and tokens.ids.device.type == "cpu"
    assert tokens.num_frames == 9 and tokens.prime_frames == 0 and tokens.fps == 8.0
    assert torch.equal(sample_scene(model, cond, frames=9, seed=5).ids, tokens.ids)
    assert not torch.equal(sample_scene(model, cond, frames=9, seed=6).ids, tokens.ids)


def test_sample_scene_progress_preview_and_cancel_each_step(model, cond, progress, monkeypatch):
    sample_scene(model, cond, steps=8)
    (bar,) = progress
    assert bar.total == 8 and [value for value, _ in bar.updates] == list(range(1, 9))
    previews = [value for value, preview in bar.updates if preview is not None]
    assert previews == [2, 4, 6]  # a modest rate: fewer than 6 per scene, none after the last step
    kind, image, size = bar.updates[1][1]
    assert kind == "JPEG" and image.size == (4 * 8, 3 * 8) and size == 512  # 9 frames in a 4x3 sheet

    class Interrupted(BaseException):  # ComfyUI's InterruptProcessingException is a BaseException
        pass

    checks = []

    def interrupt():
        checks.append(True)
        if len(checks) == 2:
            raise Interrupted

    monkeypatch.setattr(adapter, "check_interrupted", interrupt)
    with pytest.raises(Interrupted):
        sample_scene(model, cond, frames=9)
    assert len(checks) == 2
    monkeypatch.undo()
    assert sample_scene(model, cond, frames=9).num_frames == 9  # the model still works after a cancel


def test_a_whole_prime_is_kept_and_the_scene_continues_it(model, cond, scene9):
    first = scene9
    second = sample_scene(model, cond, frames=17, seed=2, prime=first, prime_frames=9)
    assert second.num_frames == 17 and second.prime_frames == 9
    assert torch.equal(second.ids[:, :5], first.ids)  # 9 frames = 5 token-frames, unchanged
    images, fps = decode(second)
    assert images.shape == (17, 8, 8, 3) and fps == 8.0
    assert decode(second, include_prime=False)[0].shape == (8, 8, 8, 3)


def test_a_prime_tail_is_re_encoded_like_scene_chaining(model, cond, scene9):
    first = scene9
    second = sample_scene(model, cond, frames=17, seed=2, prime=first, prime_frames=5)
    pipeline = model.pipeline
    expected = pipeline.encode_video(pipeline.decode(first.ids)[:, :, -5:])
    assert torch.equal(second.ids[:, :3], expected.cpu())


def test_one_model_can_continue_another_models_clip(model, cond, model_dir):
    (other,) = nodes["PhenakiLoader"]().load("sub/other.safetensors", "cpu", "fp32")
    assert other is not model
    prime = sample_scene(other, cond, frames=9, seed=1)  # same text encoder, so the cond fits both
    tokens = sample_scene(model, cond, frames=17, prime=prime, prime_frames=5)
    assert tokens.model is model and tokens.num_frames == 17


# --- Encode Video ----------------------------------------------------------------------------------
def test_encode_video_keeps_the_clip_end_and_fits_the_frames(model):
    images = torch.rand(10, 12, 16, 4)  # RGBA, not square, 10 frames -> the last 9
    tokens = encode_video(model, images)
    assert tokens.num_frames == 9 and tokens.prime_frames == 0 and tokens.ids.shape == (1, 5, 2, 2)
    expected = images[1:, :, :, :3].permute(3, 0, 1, 2).unsqueeze(0)
    expected = torch.nn.functional.interpolate(expected[0].permute(1, 0, 2, 3), size=(8, 11), mode="bilinear",
                                               antialias=True, align_corners=False)[:, :, :, 1:9]
    assert torch.allclose(tokens.source[0].permute(1, 0, 2, 3), expected.clamp(0, 1), atol=1e-6)
    gray = encode_video(model, torch.rand(3, 8, 8, 1))
    assert gray.source.shape == (1, 3, 3, 8, 8)
    long = torch.rand(20, 8, 8, 3)  # no prime can be longer than the model's 17 frames
    tokens = encode_video(model, long)
    assert tokens.num_frames == 17 and torch.equal(tokens.source[0], long[3:].permute(3, 0, 1, 2))


def test_encode_video_reports_what_it_kept_and_cut(model, caplog):
    with caplog.at_level("INFO"):
        _, report = nodes["PhenakiEncodeVideo"]().encode(model, torch.rand(10, 12, 16, 3))
    assert report == ("Phenaki Encode Video: kept the last 9 frames of 10, dropped 1 from the start (clips have "
                      "1 + k*2 frames, at most 17); 16x12 centre-cropped to its middle 12x12 (about 2 px cut at the "
                      "left and right), resized to 8x8")
    assert report in caplog.text and caplog.records[-1].levelname == "WARNING"  # something was cut
    _, report = nodes["PhenakiEncodeVideo"]().encode(model, torch.rand(1, 8, 8, 3))
    assert report == "Phenaki Encode Video: kept the one frame; 8x8 as is"


def subject_on_the_left(frames: int = 3) -> torch.Tensor:
    """A 16:8 clip, black but for a white square at the far left (an off-centre subject)."""
    images = torch.zeros(frames, 8, 16, 3)
    images[:, 3:5, 0:2] = 1.0
    return images


def test_encode_video_crop_modes_keep_an_off_centre_subject(model):
    centre = encode_video(model, subject_on_the_left())
    assert centre.source.max() == 0  # cut away: the centre square holds nothing
    padded = encode_video(model, subject_on_the_left(), crop="pad")
    assert padded.source.shape == (1, 3, 3, 8, 8)
    assert padded.source[..., :2, :].max() == 0 and padded.source[..., 6:, :].max() == 0  # black bars
    assert padded.source[..., 2:6, :2].max() > 0.2  # the subject, at the left (halved: blurred)
    stretched = encode_video(model, subject_on_the_left(), crop="fit")
    assert stretched.source.shape == (1, 3, 3, 8, 8) and stretched.source[..., :, :2].max() > 0.2
    with pytest.raises(ValueError, match="unknown crop 'zoom'; use one of center, pad, fit"):
        encode_video(model, subject_on_the_left(), crop="zoom")


def test_resample_indices_keep_the_last_frame_at_the_model_rate():
    assert glue.resample_indices(25, 24.0, 8.0) == list(range(0, 25, 3))
    assert glue.resample_indices(5, 4.0, 8.0) == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert glue.resample_indices(7, 8.0, 8.0) == list(range(7))
    assert glue.resample_indices(10, 30.0, 8.0)[-1] == 9


def test_encode_video_resamples_the_clip_to_the_model_rate(model):
    images = torch.rand(60, 8, 8, 3)  # 2.5 s at 24 fps
    tokens, report = nodes["PhenakiEncodeVideo"]().encode(model, images, "center", 24.0)
    keep = glue.resample_indices(60, 24.0, 8.0)[-17:]  # every 3rd frame, the last 17 of them
    assert keep == list(range(11, 60, 3))
    assert torch.equal(tokens.source[0], images[keep].permute(3, 0, 1, 2))
    assert "resampled 24 fps to the model's 8 fps (60 frames -> 20)" in report
    assert "kept the last 17 frames of 20" in report
    same_rate = encode_video(model, images[:9], source_fps=8.0)
    assert torch.equal(same_rate.source[0], images[:9].permute(3, 0, 1, 2))
    with pytest.raises(ValueError, match="source_fps must be a frame rate >= 0"):
        encode_video(model, images, source_fps=float("nan"))


def test_example_clip_node_gives_frames_and_their_rate():
    choices = nodes["PhenakiExampleClip"].INPUT_TYPES()["required"]["clip"][0]
    assert choices == ["phenaki_example_clip.gif"]
    images, fps = nodes["PhenakiExampleClip"]().load(choices[0])
    assert images.shape == (9, 64, 64, 3) and images.dtype == torch.float32 and fps == 8.0
    with pytest.raises(ValueError, match="no example clip 'mine.gif'.*pick one of phenaki_example_clip.gif"):
        nodes["PhenakiExampleClip"]().load("mine.gif")


def test_encoded_clip_primes_a_scene_with_its_own_frames(model, cond):
    clip = encode_video(model, torch.rand(9, 8, 8, 3))
    whole = sample_scene(model, cond, frames=17, prime=clip, prime_frames=9)
    assert torch.equal(whole.ids[:, :5], clip.ids)
    tail = sample_scene(model, cond, frames=17, prime=clip, prime_frames=5)
    expected = model.pipeline.encode_video(clip.source[:, :, -5:])  # the real frames, not a reconstruction
    assert torch.equal(tail.ids[:, :3], expected.cpu())


# --- Decode ----------------------------------------------------------------------------------------
def test_decode_gives_comfyui_images(scene9):
    images, fps = decode(scene9)
    assert images.shape == (9, 8, 8, 3) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert images.min() >= 0 and images.max() <= 1 and images.is_contiguous()
    assert isinstance(fps, float) and fps == 8.0


# --- Chain Scenes ----------------------------------------------------------------------------------
def test_chain_scenes_makes_a_story_with_scene_starts(model, progress):
    images, fps, starts = chain_scenes(model, "a red circle moving right\n\n  a red circle moving up \na red circle",
                                       frames=17, seed=3)
    assert images.shape == (17 + 12 + 12, 8, 8, 3) and images.dtype == torch.float32
    assert fps == 8.0 and starts == "0,17,29"
    (bar,) = progress
    assert bar.total == 3 * STEPS and [value for value, _ in bar.updates] == list(range(1, 3 * STEPS + 1))
    again = chain_scenes(model, "a red circle moving right\na red circle moving up\na red circle", frames=17,
                         seed=3)[0]
    assert torch.equal(again, images)


@pytest.mark.parametrize("with_prime", [False, True], ids=["story", "story from a clip"])
def test_chain_scenes_previews_every_scene_with_its_prime(model, progress, monkeypatch, with_prime):
    """Each scene's previews start with its prime; a scene's last preview is the scene the node returns."""
    seen = []
    real = glue.StepProgress.sheet
    monkeypatch.setattr(glue.StepProgress, "sheet", staticmethod(lambda video: seen.append(video) or real(video)))
    prime = encode_video(model, torch.rand(9, 8, 8, 3)) if with_prime else None
    images, _, starts = chain_scenes(model, "a red circle moving right\na red circle moving up\na red circle",
                                     frames=17, seed=3,
                              prime=prime)
    bounds = [int(s) for s in starts.split(",")] + [images.shape[0]]
    (bar,) = progress
    assert sum(preview is not None for _, preview in bar.updates) == len(seen) == 3 * STEPS
    assert all(video.shape[1] == 17 for video in seen), [v.shape for v in seen]  # prime + new frames, every scene
    for scene in range(3):
        last = seen[(scene + 1) * STEPS - 1]  # (c, f, H, W) after the scene's last step
        carried = 5 if scene or with_prime else 0
        assert torch.equal(last[:, carried:].clamp(0, 1).permute(1, 2, 3, 0), images[bounds[scene]:bounds[scene + 1]])


def test_chain_scenes_decodes_nothing_extra_without_previews(model, monkeypatch):
    monkeypatch.setattr(glue.StepProgress, "decode", lambda *a: pytest.fail("decoded a preview nobody sees"))
    assert chain_scenes(model, "a red circle\na blue square", frames=17)[0].shape[0] == 17 + 12


def test_chain_scenes_can_start_from_a_clip(model):
    clip = encode_video(model, torch.rand(9, 8, 8, 3))
    images, _, starts = chain_scenes(model, "a red circle moving up\na red circle moving left", frames=17,
                                     prime=clip)
    assert images.shape[0] == 12 + 12 and starts == "0,12"


def test_sampling_nodes_offer_every_remask_mode_defaulting_to_the_samplers(model, cond, monkeypatch):
    seen = []
    real = glue.sample_scene
    monkeypatch.setattr(glue, "sample_scene", lambda m, c, f, sampler, *a: seen.append(sampler.remask) or real(
        m, c, f, sampler, *a))
    for name in ("PhenakiSampleScene", "PhenakiChainScenes"):
        spec = nodes[name].INPUT_TYPES()["optional"]["remask"]
        assert tuple(spec[0]) == REMASK_MODES and spec[1]["default"] == SamplerConfig().remask
    node = nodes["PhenakiSampleScene"]()
    old_graph = node.sample(model, cond, 9, STEPS, 3.0, 0.9, 1.0, 0)[0]  # a graph without the remask input
    critic = node.sample(model, cond, 9, STEPS, 3.0, 0.9, 1.0, 0, remask="critic")[0]
    assert seen == [SamplerConfig().remask, "critic"]
    assert not torch.equal(old_graph.ids, critic.ids)

"""The ComfyUI nodes, called in-process outside ComfyUI (the adapter's fallbacks), on a tiny model:
what each node makes, its progress and previews, and the pack's shape: V3 nodes registered by
``comfy_entrypoint`` with the interface the V1 nodes had. Bad input to the nodes is in
test_bad_inputs_nodes.py; image to video in test_image_to_video.py.

The pack is imported the way ComfyUI imports it: its root ``__init__.py`` as a package, so that
``nodes/`` and its copy of ``phenaki_core`` are subpackages (relative imports only). Nodes are
called as ComfyUI calls them: ``execute(**inputs)``, which returns an ``io.NodeOutput``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import logging
import os
import sys
import types

import pytest
import torch

from phenaki_core import MINILM_SPEC, SamplerConfig
from phenaki_core.sampling import REMASK_MODES

from helpers import (ROOT, STEPS, chain_scenes, decode, encode_text, encode_video, interface, load_model, node_info,
                     pack_parts, run, sample_scene, save_tiny_bundle)

pack, nodes, glue, adapter = pack_parts()
io = adapter.io
V1_NODE_INFO = json.loads((ROOT / "tests" / "fixtures" / "saved_before_v3" / "v1_node_info.json").read_text())


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


# --- the pack ----------------------------------------------------------------------------------------
NODE_IDS = ["PhenakiLoader", "PhenakiEncodeText", "PhenakiSampleScene", "PhenakiChainScenes", "PhenakiEncodeVideo",
            "PhenakiDecode", "PhenakiExampleClip"]


def test_comfy_entrypoint_registers_the_seven_v3_nodes_with_their_old_ids():
    extension = asyncio.run(pack.comfy_entrypoint())
    assert isinstance(extension, adapter.ComfyExtension)
    classes = asyncio.run(extension.get_node_list())
    assert [cls.define_schema().node_id for cls in classes] == NODE_IDS == list(nodes)
    for cls in classes:
        assert issubclass(cls, io.ComfyNode)
        schema = cls.define_schema()
        assert schema.category == "Phenaki" and schema.description
        assert inspect.ismethod(cls.execute) and inspect.ismethod(cls.define_schema)  # classmethods, as V3 wants
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS") and not hasattr(pack, "NODE_DISPLAY_NAME_MAPPINGS")  # no V1


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_the_v3_schema_keeps_the_v1_interface(node_id):
    """Display name, inputs in order (their types, choices, defaults, ranges), outputs in order: what saved
    UI graphs (widget values by position) and API prompts (inputs by name) depend on."""
    old = V1_NODE_INFO[node_id]
    info = node_info(nodes[node_id])
    if node_id == "PhenakiLoader":  # the fixture lists the bundled model only; other tests add model folders
        ckpt = info["input"]["required"]["ckpt_name"][1]
        assert ckpt["options"][0] == "(bundled) shapes64"
        ckpt["options"] = ckpt["options"][:1]
    assert interface(info) == interface(old)
    assert set(old["search_aliases"]) <= set(info["search_aliases"])
    schema = nodes[node_id].define_schema()
    optional = [spec.optional for spec in schema.inputs]
    assert optional == sorted(optional), "required inputs first: the frontend's widget order is the schema's"


def test_sampling_nodes_keep_the_seed_widget_with_control_after_generate():
    for node_id in ("PhenakiSampleScene", "PhenakiChainScenes"):
        (seed,) = [spec for spec in nodes[node_id].define_schema().inputs if spec.id == "seed"]
        assert seed.io_type == "INT" and seed.control_after_generate is True and seed.max == 2**64 - 1
        assert seed.default == 0 and not seed.optional


def test_every_input_and_output_has_a_tooltip():
    for node_id, cls in nodes.items():
        schema = cls.define_schema()
        for spec in schema.inputs:
            assert spec.tooltip, f"{node_id}.{spec.id} has no tooltip"
        assert schema.outputs and all(o.tooltip for o in schema.outputs), f"{node_id}: a tooltip per output"


@pytest.mark.parametrize("node_id", ["PhenakiEncodeText", "PhenakiSampleScene", "PhenakiChainScenes"])
def test_validate_inputs_names_only_the_nodes_own_inputs(node_id):
    """ComfyUI passes validate_inputs the inputs its parameters name: a misspelt one would never arrive."""
    ids = {spec.id for spec in nodes[node_id].define_schema().inputs}
    assert "validate_inputs" in vars(nodes[node_id])
    assert set(inspect.signature(nodes[node_id].validate_inputs).parameters) <= ids


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_execute_takes_every_input_by_name_with_defaults_for_the_optional_ones(node_id):
    """ComfyUI calls execute(**inputs) with the inputs a graph has: an optional one may be absent."""
    schema = nodes[node_id].define_schema()
    parameters = inspect.signature(nodes[node_id].execute).parameters
    assert list(parameters) == [spec.id for spec in schema.inputs]
    for spec in schema.inputs:
        if spec.optional:
            assert parameters[spec.id].default is not inspect.Parameter.empty, f"{node_id}.{spec.id} needs a default"


SEARCHES = {  # what a user types into the node search -> the nodes it must find
    "text to video": {"PhenakiSampleScene", "PhenakiChainScenes", "PhenakiEncodeText"},
    "t2v": {"PhenakiSampleScene", "PhenakiChainScenes"},
    "story": {"PhenakiChainScenes"},
    "video": {"PhenakiSampleScene", "PhenakiChainScenes", "PhenakiEncodeVideo", "PhenakiDecode"},
    "continue": {"PhenakiSampleScene", "PhenakiEncodeVideo"},
    "image to video": {"PhenakiEncodeVideo", "PhenakiSampleScene"},
    "i2v": {"PhenakiEncodeVideo", "PhenakiSampleScene"},
}


def searchable(cls) -> str:
    """What ComfyUI's frontend searches: the node's id, display name and search aliases."""
    schema = cls.define_schema()
    return " | ".join([schema.node_id, schema.display_name, *schema.search_aliases]).lower()


@pytest.mark.parametrize("query", list(SEARCHES))
def test_the_node_search_finds_the_right_nodes(query):
    found = {node_id for node_id, cls in nodes.items() if query in searchable(cls)}
    assert SEARCHES[query] <= found, f"{query!r} finds {sorted(found)}"


def test_nodes_is_never_installed_as_a_package():
    """ComfyUI has a top-level ``nodes`` module; an installed ``nodes`` package would shadow it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert all(entry.startswith("phenaki_core") for entry in setuptools["include"])


def test_adapter_fallbacks_outside_comfyui():
    assert adapter.IN_COMFYUI is False
    assert adapter.comfyui_problem() is None and adapter.input_directory() is None
    assert io.ComfyNode.__module__.endswith("nodes.io_fallback")  # comfy_api is absent here
    assert adapter.intermediate_device() == torch.device("cpu")
    assert adapter.intermediate_dtype() == torch.float32
    assert adapter.load_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert adapter.manage_modules(torch.nn.Linear(1, 1), torch.device("cpu"), torch.device("cpu")) is None
    adapter.check_interrupted()  # a no-op
    assert adapter.previews_enabled() is False
    bar = adapter.ProgressBar(3)
    for step in range(1, 4):
        bar.update_absolute(step, 3, None)


# --- a ComfyUI too old for the V3 nodes ----------------------------------------------------------------
def load_pack_in_a_fake_comfyui(monkeypatch, name: str, version: str):
    """Import the pack as ComfyUI would, in a process where ``comfy`` imports (but not ``comfy_api``)."""
    comfy = types.ModuleType("comfy")
    for sub in ("model_management", "utils"):
        module = types.ModuleType(f"comfy.{sub}")
        setattr(comfy, sub, module)
        monkeypatch.setitem(sys.modules, f"comfy.{sub}", module)
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "folder_paths", types.ModuleType("folder_paths"))
    monkeypatch.setitem(sys.modules, "comfyui_version", types.SimpleNamespace(__version__=version))
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    try:
        spec.loader.exec_module(module)
    finally:
        for key in [k for k in sys.modules if k.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, key)
    return module


@pytest.mark.parametrize("version, expected", [
    ("0.10.0", "need ComfyUI 0.11.0 or newer (its V3 node API), this is ComfyUI 0.10.0; update ComfyUI"),
    ("0.33.0", "V3 node API (comfy_api.v0_0_2) did not import (ModuleNotFoundError"),
])
def test_an_older_comfyui_gets_one_log_line_and_no_traceback(monkeypatch, caplog, version, expected):
    with caplog.at_level(logging.WARNING):
        old = load_pack_in_a_fake_comfyui(monkeypatch, "phenaki_pack_in_old_comfyui", version)
    assert not hasattr(old, "comfy_entrypoint")  # nothing for ComfyUI to register
    (record,) = caplog.records
    assert record.levelname == "ERROR" and expected in record.getMessage() and "\n" not in record.getMessage()
    assert "Traceback" not in caplog.text


def test_the_required_comfyui_is_the_one_pyproject_names():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    comfy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["comfy"]
    assert comfy["requires-comfyui"] == f">={adapter.MIN_COMFYUI}"


# --- Load Phenaki ----------------------------------------------------------------------------------
def schema_input(node_id: str, input_id: str):
    (spec,) = [spec for spec in nodes[node_id].define_schema().inputs if spec.id == input_id]
    return spec


def test_loader_lists_bundled_model_and_safetensors_only(model_dir):
    choices = schema_input("PhenakiLoader", "ckpt_name").options
    assert choices[0] == "(bundled) shapes64"
    assert "tiny.safetensors" in choices and "sub/other.safetensors" in choices
    assert not any(name.endswith((".pt", ".txt")) for name in choices)


def test_loader_fingerprint_changes_when_the_checkpoint_file_does(model_dir, tmp_path):
    """fingerprint_inputs: ComfyUI serves an unchanged checkpoint from its cache and loads it again
    once the file changed on disk (retrained, replaced), instead of running on the old weights."""
    path = save_tiny_bundle(model_dir / "fingerprint.safetensors")
    loader = nodes["PhenakiLoader"]
    first = loader.fingerprint_inputs(ckpt_name="fingerprint.safetensors", device="cpu", dtype="fp32", t5_folder="")
    assert loader.fingerprint_inputs(ckpt_name="fingerprint.safetensors", device="cpu", dtype="fp32") == first
    stamp = path.stat().st_mtime_ns
    save_tiny_bundle(path, seed=1)
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    assert loader.fingerprint_inputs(ckpt_name="fingerprint.safetensors", device="cpu", dtype="fp32") != first
    assert loader.fingerprint_inputs(ckpt_name="gone.safetensors", device="cpu", dtype="fp32") == ("gone.safetensors",)
    assert loader.fingerprint_inputs(ckpt_name=None, device="cpu", dtype="fp32") == (None,)  # fed by a link


def test_nodes_return_node_outputs_in_schema_order(model, cond, scene9):
    output = nodes["PhenakiDecode"].execute(tokens=scene9, include_prime=True)
    assert isinstance(output, io.NodeOutput) and len(output.args) == 2
    images, fps = output.args
    assert images.shape == (9, 8, 8, 3) and fps == 8.0


def test_loader_reuses_a_loaded_checkpoint(model):
    again = load_model("tiny.safetensors", "cpu", "fp32")
    assert again is model
    assert model.load_device == torch.device("cpu") and model.dtype == torch.float32
    assert model.text_spec.to_dict() == MINILM_SPEC.to_dict()  # the pack's own copy of the class


# --- Encode Text -----------------------------------------------------------------------------------
def test_encode_text_gives_a_cpu_cond_with_optional_negative(model, cond):
    assert cond.text.embeds.shape[0] == 1 and cond.text.embeds.shape[2] == 384
    assert cond.text.embeds.device.type == "cpu" and cond.negative is None
    assert cond.encoder.to_dict() == MINILM_SPEC.to_dict()
    with_negative = encode_text(model, "a red\ncircle", "a blue square")
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
    other = load_model("sub/other.safetensors", "cpu", "fp32")
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
        _, report = run("PhenakiEncodeVideo", model=model, images=torch.rand(10, 12, 16, 3))
    assert report == ("Phenaki Encode Video: kept the last 9 frames of 10, dropped 1 from the start (clips have "
                      "1 + k*2 frames, at most 17); 16x12 centre-cropped to its middle 12x12 (about 2 px cut at the "
                      "left and right), resized to 8x8")
    assert report in caplog.text and caplog.records[-1].levelname == "WARNING"  # something was cut
    _, report = run("PhenakiEncodeVideo", model=model, images=torch.rand(1, 8, 8, 3))
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
    tokens, report = run("PhenakiEncodeVideo", model=model, images=images, crop="center", source_fps=24.0)
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
    choices = schema_input("PhenakiExampleClip", "clip").options
    assert choices == ["phenaki_example_clip.gif"]
    images, fps = run("PhenakiExampleClip", clip=choices[0])
    assert images.shape == (9, 64, 64, 3) and images.dtype == torch.float32 and fps == 8.0
    with pytest.raises(ValueError, match="no example clip 'mine.gif'.*pick one of phenaki_example_clip.gif"):
        run("PhenakiExampleClip", clip="mine.gif")


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
        spec = schema_input(name, "remask")
        assert spec.optional and tuple(spec.options) == REMASK_MODES and spec.default == SamplerConfig().remask
    old_graph = sample_scene(model, cond, 9, STEPS, 3.0, 0.9, 1.0, 0)  # a graph without the remask input
    critic = sample_scene(model, cond, 9, STEPS, 3.0, 0.9, 1.0, 0, remask="critic")
    assert seen == [SamplerConfig().remask, "critic"]
    assert not torch.equal(old_graph.ids, critic.ids)

"""Long-running process hygiene (a ComfyUI server runs for days) and no network access.

* A cancelled or failed sampling run leaves the model as it was: same weights, same mode, and the
  next run gives exactly what a fresh run with that seed gives.
* Loading the same checkpoint twice reuses the loaded model; a changed file or other settings
  load a new one, and a model nothing refers to any more is freed.
* Hundreds of generations in one process keep the resident memory flat.
* Generation through the pipeline, the CLI and the nodes never opens a network connection.
"""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path

import pytest
import torch

from phenaki_core import PhenakiPipeline, SamplerConfig, sample_ids
from phenaki_core.cli import main
from phenaki_core.pipeline import make_video

from helpers import (build_tiny, chain_scenes, decode, encode_text, encode_video, load_model, pack_parts, random_text,
                     sample_scene, save_tiny_bundle)

pack, nodes, glue, adapter = pack_parts()

PREFIX = "hygiene_"  # distinct names in the model folder list shared with other test modules
SAMPLER = SamplerConfig(steps=4)


class Cancelled(BaseException):
    """Like ComfyUI's InterruptProcessingException: a BaseException, raised from the step callback."""


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_weights(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())


def sample(model, seed=0, **kwargs):
    return sample_ids(model, random_text(1), num_frames=9, sampler=SAMPLER,
                      generator=torch.Generator().manual_seed(seed),
                        **kwargs)


# --- interrupted and failed runs -------------------------------------------------------------------
def cancel_at(step_index: int, error: BaseException):
    def callback(step):
        if step.step == step_index:
            raise error
    return callback


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("error", [Cancelled(), KeyboardInterrupt(), RuntimeError("CUDA out of memory")])
def test_a_cancelled_sampling_run_leaves_the_model_as_it_was(mode, error):
    model = build_tiny()
    fresh = sample(build_tiny(), seed=3)
    model.train(mode == "train")
    before = weights(model)
    with pytest.raises(type(error)):
        sample(model, seed=3, callback=cancel_at(1, error))
    assert same_weights(model, before)
    assert model.training == (mode == "train") and torch.is_grad_enabled()
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(sample(model, seed=3), fresh), "the next run must equal a fresh run with the same seed"


def test_a_failure_inside_the_model_leaves_it_working():
    """A layer fails half way through sampling (e.g. out of memory): no partial state survives."""
    model = build_tiny()
    fresh = sample(build_tiny(), seed=5)
    before = weights(model)
    calls = []

    def explode(module, args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory")

    handle = model.maskgit.transformer.register_forward_pre_hook(explode)
    with pytest.raises(RuntimeError, match="out of memory"):
        sample(model, seed=5)
    handle.remove()
    assert same_weights(model, before) and not model.training
    assert torch.equal(sample(model, seed=5), fresh)


def test_a_story_cancelled_in_its_second_scene_leaves_the_model_as_it_was():
    model = build_tiny()
    texts = [random_text(1, seed=1), random_text(1, seed=2)]
    run = lambda callback=None: make_video(model, texts, 9, 5, sampler=SAMPLER,  # noqa: E731
                                           generator=torch.Generator().manual_seed(0), callback=callback).video
    fresh = run()
    before = weights(model)

    def cancel(scene, step):
        if scene == 1 and step.step == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        run(cancel)
    assert same_weights(model, before)
    assert torch.equal(run(), fresh)


# --- the nodes: cancel, cache, memory -----------------------------------------------------------------
def load(name="tiny.safetensors", dtype="fp32"):
    return load_model(name, "cpu", dtype)


def test_a_cancelled_node_run_leaves_the_model_as_it_was(model, cond, monkeypatch):
    fresh = sample_scene(model, cond, steps=4, seed=11).ids
    before = weights(model.pipeline.model)
    checks = []

    def interrupt():
        checks.append(1)
        if len(checks) % 3 == 0:  # the third step of each run
            raise Cancelled

    monkeypatch.setattr(adapter, "check_interrupted", interrupt)
    with pytest.raises(Cancelled):
        sample_scene(model, cond, steps=4, seed=11)
    with pytest.raises(Cancelled):  # cancelled again, in a story this time
        chain_scenes(model, "a red circle\na blue square", steps=4, seed=11)
    monkeypatch.undo()
    assert same_weights(model.pipeline.model, before)
    assert torch.equal(sample_scene(model, cond, steps=4, seed=11).ids, fresh)


def test_the_loader_reuses_a_loaded_checkpoint_until_it_changes(model_dir, model):
    assert load() is model, "the same file and settings give the same loaded model"
    assert load(dtype="bf16") is not model, "other settings load their own copy"
    copy = model_dir / f"{PREFIX}copy.safetensors"
    save_tiny_bundle(copy)
    first = load(copy.name)
    assert load(copy.name) is first
    stamp = copy.stat().st_mtime_ns
    save_tiny_bundle(copy, seed=1)  # the file is replaced (e.g. training wrote a newer one)
    os.utime(copy, ns=(stamp + 10**9, stamp + 10**9))
    second = load(copy.name)
    assert second is not first
    assert not torch.equal(second.pipeline.model.maskgit.to_logits.weight, first.pipeline.model.maskgit.to_logits.weight)

    gone = weakref.ref(first.pipeline.model)
    del first, second
    gc.collect()
    assert gone() is None, "a model nothing refers to any more is freed, not kept by the loader's cache"


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc (Linux)")
def test_hundreds_of_generations_keep_memory_flat(model, cond):

    def one(index):
        model = load()  # as ComfyUI re-runs the loader: must be the cached model, not a new copy
        tokens = sample_scene(model, cond, frames=5, seed=index)
        images, _ = decode(tokens)
        assert images.shape == (5, 8, 8, 3)

    for index in range(40):  # warm up: allocator pools, lazily built caches
        one(index)
    gc.collect()
    start = rss_mib()
    readings = []
    for index in range(260):
        one(index)
        if index % 65 == 64:
            gc.collect()
            readings.append(rss_mib())
    growth = readings[-1] - start
    assert growth < 16, f"resident memory grew by {growth:.1f} MiB over 260 generations: {readings}"


# --- no network ------------------------------------------------------------------------------------
def test_cli_and_pipeline_generate_offline(tmp_path, no_network, monkeypatch):
    path = save_tiny_bundle(tmp_path / "offline.safetensors")
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "a red circle moving right", "a red circle moving up", "-o", "story.gif",
                 "--checkpoint", str(path), "--frames", "9", "--steps", "2", "--device", "cpu"]) == 0
    assert (tmp_path / "story.gif").stat().st_size > 0
    pipe = PhenakiPipeline.from_checkpoint(path, device="cpu", dtype="fp32")
    assert pipe.make_video(["a blue square"], num_frames=5, sampler=SamplerConfig(steps=2)).video.shape[2] == 5


def test_nodes_run_offline(tmp_path, no_network):
    save_tiny_bundle(tmp_path / f"{PREFIX}offline.safetensors")  # a file no other test has loaded
    adapter.add_model_folder(tmp_path)
    model = load(f"{PREFIX}offline.safetensors")
    cond = encode_text(model, "a red circle moving right", "a blue square")
    tokens = sample_scene(model, cond)
    images, _ = decode(tokens)
    clip = encode_video(model, images)
    story, _, starts = chain_scenes(model, "a red circle\na blue square", prime=clip)
    assert story.shape == (8, 8, 8, 3) and starts == "0,4"

"""Bad input through the ComfyUI nodes (called in-process, outside ComfyUI).

Every case raises a ``ValueError`` subclass within seconds, with a one-line message that says
what to change; input checks run before the model is brought to its device; and afterwards the
model is intact: its weights are unchanged and a valid call gives exactly the reference result.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from phenaki_core import MINILM_SPEC, TextEncoderSpec

from helpers import (PACK, chain_scenes, encode_text, encode_video, load_model, pack_parts, sample_scene,
                     save_tiny_bundle)

pack, nodes, glue, adapter = pack_parts()
PhenakiError = sys.modules[f"{PACK}.phenaki_core.errors"].PhenakiError

PREFIX = "bad_inputs_"  # file names of this module, distinct from other tests' in the shared model folder list


def rewrite(source, target, *, metadata=None, drop=(), change=None):
    tensors = dict(load_file(str(source)))
    for key in drop:
        tensors.pop(key)
    for key, fn in (change or {}).items():
        tensors[key] = fn(tensors[key])
    with safe_open(str(source), framework="pt") as handle:
        meta = dict(handle.metadata())
    meta.update(metadata or {})
    save_file(tensors, str(target), metadata=meta)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """Broken and foreign checkpoints, made from a good one, in a folder the loader lists."""
    folder = tmp_path_factory.mktemp("phenaki_models_bad")
    good = save_tiny_bundle(folder / f"{PREFIX}tiny.safetensors")
    raw = good.read_bytes()
    (folder / f"{PREFIX}noise.safetensors").write_bytes(bytes(range(256)) * 8)
    (folder / f"{PREFIX}half.safetensors").write_bytes(raw[: len(raw) // 2])
    save_file({"w": torch.zeros(2)}, str(folder / f"{PREFIX}plain.safetensors"))
    torch.save({"w": torch.zeros(2)}, folder / f"{PREFIX}old.pt")
    rewrite(good, folder / f"{PREFIX}missing.safetensors", drop=["maskgit.to_logits.bias"])
    rewrite(good, folder / f"{PREFIX}nan.safetensors",
            change={"maskgit.to_logits.bias": lambda t: torch.full_like(t, float("inf"))})
    for name, spec in (("clip", TextEncoderSpec("clip-vit-l", 384)), ("t5", TextEncoderSpec("t5", 384, "c" * 64))):
        rewrite(good, folder / f"{PREFIX}{name}.safetensors", metadata={"text_encoder": json.dumps(spec.to_dict())})
    adapter.add_model_folder(folder)
    return folder


def load(name, device="cpu", dtype="fp32", t5_folder=""):
    return load_model(name, device, dtype, t5_folder)


@pytest.fixture(scope="module")
def reference(model, cond):
    """What a valid call gives, and the weights, before any bad input is tried."""
    weights = {k: v.clone() for k, v in model.pipeline.model.state_dict().items()}
    return sample_scene(model, cond, seed=7).ids, chain_scenes(model, "a red circle\na blue square", seed=7)[0], weights


def refused(call, message):
    """``call()`` raises a one-line ValueError matching ``message``."""
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert isinstance(info.value, PhenakiError), f"{type(info.value).__name__} is not a Phenaki error type"
    text = str(info.value)
    assert "\n" not in text and len(text) < 400, text
    return info.value


def still_works(model, cond, reference):
    ids, story, weights = reference
    state = model.pipeline.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items()), "a bad input changed the weights"
    assert torch.equal(sample_scene(model, cond, seed=7).ids, ids), "a valid call no longer gives the reference result"


# --- Load Phenaki -----------------------------------------------------------------------------------
LOADER_CASES = [
    (dict(name="missing.safetensors"), "not in the phenaki model folder.*put the .safetensors file there"),
    (dict(name=f"{PREFIX}noise.safetensors"), "not a readable safetensors file"),
    (dict(name=f"{PREFIX}half.safetensors"), "truncated or corrupt"),
    (dict(name=f"{PREFIX}plain.safetensors"), "not a Phenaki bundle"),
    (dict(name=f"{PREFIX}old.pt"), "pickle file.*refused.*phenaki convert"),
    (dict(name=f"{PREFIX}missing.safetensors"), "missing tensors.*maskgit.to_logits.bias"),
    (dict(name=f"{PREFIX}nan.safetensors"), "NaN or infinite values"),
    (dict(name=f"{PREFIX}clip.safetensors"), "unknown text encoder 'clip-vit-l'"),
    (dict(name=f"{PREFIX}t5.safetensors"), "T5 encoder.*t5_folder"),
    (dict(name=f"{PREFIX}t5.safetensors", t5_folder="/no/such/t5"), "T5 folder /no/such/t5 does not exist"),
    (dict(name="tiny.safetensors", dtype="fp64"), "unknown dtype 'fp64'"),
    (dict(name="tiny.safetensors", device="tpu"), "unknown device 'tpu'"),
]


@pytest.mark.parametrize("kwargs, message", LOADER_CASES)
def test_loader_refuses_bad_checkpoints(bad_files, model, cond, reference, kwargs, message):
    kwargs = dict(kwargs)
    refused(lambda: load(kwargs.pop("name"), **kwargs), message)
    assert load("tiny.safetensors") is model, "the loaded model is still reused after a failed load"
    still_works(model, cond, reference)


def test_loader_says_what_to_do_without_the_bundled_model_or_a_gpu(monkeypatch):
    def missing():
        raise glue.CheckpointError("the bundled model is missing from weights/")

    monkeypatch.setattr(glue, "default_checkpoint", missing)
    refused(lambda: load("(bundled) shapes64"), "bundled model is missing.*pick a checkpoint from models/phenaki")
    if not torch.cuda.is_available():
        refused(lambda: load("tiny.safetensors", device="cuda"), "no CUDA GPU")


# --- Encode Text ------------------------------------------------------------------------------------
TEXT_CASES = [
    ("", "prompt is empty; describe the scene"),
    ("  \n\t ", "prompt is empty"),
    (None, "must be a string"),
    ("a red \udcff circle", "not valid text"),
]


@pytest.mark.parametrize("prompt, message", TEXT_CASES)
def test_encode_text_refuses_bad_prompts(model, cond, reference, no_load, prompt, message):
    refused(lambda: encode_text(model, prompt, ""), message)
    no_load.undo()
    still_works(model, cond, reference)


def test_long_prompt_is_truncated_and_blank_negative_is_no_negative(model, caplog):
    with caplog.at_level("WARNING"):
        long = encode_text(model, "a red circle moving right " * 300, " \n ")
    assert "truncated" in caplog.text
    assert long.text.embeds.shape[1] == MINILM_SPEC.max_length and long.negative is None


# --- Sample Scene -----------------------------------------------------------------------------------
def other_encoder(cond):
    import dataclasses
    return dataclasses.replace(cond, encoder=dataclasses.replace(cond.encoder, name="t5", dim=512))


def no_text(cond):
    import dataclasses
    return dataclasses.replace(cond, text=None, encoder=None)


SAMPLE_CASES = [
    (dict(frames=16), r"frames must be 1 \+ k\*2.*try 15 or 17"),
    (dict(frames=2), r"1 \+ k\*2"),
    (dict(frames=0), r"1 \+ k\*2"),
    (dict(frames=-1), r"1 \+ k\*2"),
    (dict(frames=19), "at most 17 frames at once; use at most 17, or Phenaki Chain Scenes"),
    (dict(frames=1025), "at most 17 frames"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(steps=-3), "steps must be an integer >= 1"),
    (dict(cond_scale=math.nan), "cond_scale must be a finite number"),
    (dict(cond_scale=-1.0), "cond_scale must be a finite number >= 0"),
    (dict(cond_scale=math.inf), "cond_scale must be a finite number"),
    (dict(temperature=math.nan), "temperature must be a finite number"),
    (dict(temperature=-0.5), "temperature must be a finite number"),
    (dict(critic_noise=math.nan), "critic_noise must be a finite number"),
    (dict(remask="random"), "remask must be one of"),
    (dict(seed=-1), r"seed must be an integer in \[0, 2\*\*64\)"),
    (dict(seed=2**64), r"seed must be an integer in \[0, 2\*\*64\)"),
    (dict(seed=1.5), "seed must be an integer"),
    (dict(prime=True, frames=9, prime_frames=9), "must be shorter than the scene"),
    (dict(prime=True, frames=17, prime_frames=17), "must be shorter than the scene"),
    (dict(prime=True, frames=17, prime_frames=4), r"prime_frames must be 0 \(no priming\) or 1 \+ k\*2"),
    (dict(prime=True, frames=17, prime_frames=0), "prime_frames is 0 but a prime is connected"),
    (dict(prime=True, frames=17, prime_frames=11), r"longer than the prime clip \(9 frames\); use at most 9"),
    (dict(prime=True, frames=19, prime_frames=5), "at most 17 frames"),
    (dict(cond=other_encoder), "encoded with t5 .*needs all-MiniLM-L6-v2.*feed this model into"),
    (dict(cond=no_text), "holds no text.*encode the prompt with this model's Phenaki Encode Text"),
]


@pytest.mark.parametrize("kwargs, message", SAMPLE_CASES)
def test_sample_scene_refuses_bad_input(model, cond, reference, scene9, no_load, kwargs, message):
    kwargs = dict(kwargs)
    if kwargs.get("prime"):
        kwargs["prime"] = scene9
    bad_cond = kwargs.pop("cond")(cond) if "cond" in kwargs else cond
    refused(lambda: sample_scene(model, bad_cond, **kwargs), message)
    no_load.undo()
    still_works(model, cond, reference)


# --- Chain Scenes -----------------------------------------------------------------------------------
CHAIN_CASES = [
    (dict(prompts=""), "prompts is empty; write one prompt per line"),
    (dict(prompts=" \n\n\t"), "prompts is empty"),
    (dict(prompts=None), "prompts must be text"),
    (dict(prompts="a red circle\nan \udcff square"), "prompt 2 is not valid text"),
    (dict(frames=8), r"frames_per_scene must be 1 \+ k\*2"),
    (dict(frames=19), "frames_per_scene is 19 but this model makes at most 17"),
    (dict(prime_frames=4), r"prime_frames must be 0 \(no priming\) or 1 \+ k\*2"),
    (dict(frames=9, prime_frames=9), "must be shorter than the scene"),
    (dict(frames=9, prime_frames=-1), "prime_frames must be a whole number of frames >= 0"),
    (dict(prime=True, prime_frames=11, frames=17), r"longer than the prime clip \(9 frames\)"),
    (dict(prime=True, prime_frames=0), "prime_frames is 0 but a prime is connected"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(cond_scale=math.nan), "cond_scale must be a finite number"),
    (dict(seed=-5), r"seed must be an integer in \[0, 2\*\*64\)"),
]


@pytest.mark.parametrize("kwargs, message", CHAIN_CASES)
def test_chain_scenes_refuses_bad_input(model, cond, reference, scene9, no_load, kwargs, message):
    kwargs = {"prompts": "a red circle\na blue square", **kwargs}
    if kwargs.get("prime"):
        kwargs["prime"] = scene9
    refused(lambda: chain_scenes(model, kwargs.pop("prompts"), **kwargs), message)
    no_load.undo()
    still_works(model, cond, reference)
    assert torch.equal(chain_scenes(model, "a red circle\na blue square", seed=7)[0], reference[1])


# --- Encode Video -----------------------------------------------------------------------------------
def nan_frames():
    images = torch.rand(5, 8, 8, 3)
    images[2, 3, 4, 1] = float("nan")
    return images


VIDEO_CASES = [
    (lambda: torch.rand(8, 8, 3), r"expected IMAGE frames \[frames, height, width, channels\], got \(8, 8, 3\)"),
    (lambda: torch.rand(1, 5, 8, 8, 3), r"expected IMAGE frames.*got \(1, 5, 8, 8, 3\)"),
    (lambda: torch.rand(5, 8, 8, 5), "5 channels; use RGB"),
    (lambda: torch.rand(5, 8, 8, 2), "2 channels; use RGB"),
    (lambda: torch.rand(0, 8, 8, 3), "no frames"),
    (lambda: torch.rand(5, 0, 8, 3), "frames are 8x0 pixels"),
    (lambda: (torch.rand(5, 8, 8, 3) * 255).to(torch.uint8), "torch.uint8, not float frames in 0..1"),
    (nan_frames, "NaN or infinite values"),
    (lambda: torch.full((5, 8, 8, 3), float("inf")), "NaN or infinite values"),
    (lambda: np.random.rand(5, 8, 8, 3).astype(np.float32), "expected IMAGE frames.*got ndarray"),
]


@pytest.mark.parametrize("make, message", VIDEO_CASES)
def test_encode_video_refuses_bad_images(model, cond, reference, no_load, make, message):
    refused(lambda: encode_video(model, make()), message)
    no_load.undo()
    still_works(model, cond, reference)


def test_odd_but_valid_images_are_accepted(model):
    """Short side resized and centre-cropped; one frame; grey; tiny and non-square frames."""
    assert encode_video(model, torch.rand(1, 3, 5, 1)).num_frames == 1
    assert encode_video(model, torch.rand(4, 1, 1, 3)).num_frames == 3
    assert encode_video(model, torch.rand(2, 100, 7, 4)).num_frames == 1


# --- the same checks before the graph runs (validate_inputs) ------------------------------------------
ABSENT = sys.modules[f"{PACK}.nodes.phenaki_nodes"].ABSENT
NEEDS_THE_RUN = ("longer than the prime clip",)  # the prime's length is known only when the node runs


def pre_run(node: str, **inputs):
    """What ComfyUI's validation gets from validate_inputs: True, or the message it shows on the node."""
    return nodes[node].validate_inputs(**inputs)


@pytest.mark.parametrize("kwargs, message", [c for c in SAMPLE_CASES if set(c[0]) <= {"frames", "prime", "prime_frames"}
                                             and isinstance(c[0].get("frames", 9), int)])
def test_sample_scene_refuses_the_same_before_the_run(model, cond, scene9, no_load, kwargs, message):
    kwargs = dict(kwargs)
    inputs = {"frames": kwargs.get("frames", 9), "prime_frames": kwargs.get("prime_frames", 5),
              "prime": None if kwargs.pop("prime", False) else ABSENT}  # a linked prime arrives as None
    if inputs["prime"] is ABSENT:
        inputs.pop("prime")
    error = refused(lambda: sample_scene(model, cond, prime=scene9 if "prime" in inputs else None, **kwargs), message)
    expected = True if any(phrase in str(error) for phrase in NEEDS_THE_RUN) else str(error)
    assert pre_run("PhenakiSampleScene", **inputs) == expected


@pytest.mark.parametrize("kwargs, message", [c for c in CHAIN_CASES if set(c[0]) <= {"prompts", "frames",
                                                                                     "prime_frames"}
                                             and c[0].get("prompts", "") is not None])  # None: a linked input
def test_chain_scenes_refuses_the_same_before_the_run(model, no_load, kwargs, message):
    kwargs = {"prompts": "a red circle\na blue square", **kwargs}
    error = refused(lambda: chain_scenes(model, **kwargs), message)
    inputs = {"prompts": kwargs["prompts"], "frames_per_scene": kwargs.get("frames", 9),
              "prime_frames": kwargs.get("prime_frames", 5)}
    assert pre_run("PhenakiChainScenes", **inputs) == str(error)


@pytest.mark.parametrize("prompt, message", [c for c in TEXT_CASES if isinstance(c[0], str)])
def test_encode_text_refuses_the_same_before_the_run(model, no_load, prompt, message):
    error = refused(lambda: encode_text(model, prompt, ""), message)
    assert pre_run("PhenakiEncodeText", prompt=prompt) == str(error)


def test_pre_run_checks_pass_valid_and_linked_inputs():
    assert pre_run("PhenakiSampleScene", frames=17, prime_frames=5, prime=None) is True
    assert pre_run("PhenakiSampleScene", frames=17, prime_frames=0) is True  # no prime: prime_frames is unused
    assert pre_run("PhenakiSampleScene", frames=None, prime_frames=None, prime=None) is True  # linked widgets
    assert pre_run("PhenakiChainScenes", prompts="one scene", frames_per_scene=17, prime_frames=4) is True
    assert pre_run("PhenakiChainScenes", prompts=None, frames_per_scene=17, prime_frames=4) is True
    assert pre_run("PhenakiEncodeText", prompt=None) is True


def test_pre_run_checks_never_refuse_what_some_listed_checkpoint_accepts(monkeypatch, model):
    """With checkpoints of different frame rules in models/phenaki, only what none of them accepts is refused."""
    import dataclasses
    base = model.config
    longer = base.replace(maskgit=dataclasses.replace(base.maskgit, max_seq_len=base.cvivit.num_tokens(33)))
    monkeypatch.setattr(glue, "listed_configs", lambda: [base, longer])
    assert pre_run("PhenakiSampleScene", frames=33) is True  # too long for one, fine for the other
    assert "at most 17 frames" in pre_run("PhenakiSampleScene", frames=35)
    monkeypatch.setattr(glue, "listed_configs", lambda: [])  # nothing readable: the run checks everything
    assert pre_run("PhenakiSampleScene", frames=16) is True


def test_case_counts():
    counts = {"loader": len(LOADER_CASES), "encode text": len(TEXT_CASES), "sample scene": len(SAMPLE_CASES),
              "chain scenes": len(CHAIN_CASES), "encode video": len(VIDEO_CASES)}
    assert all(counts.values())
    print(counts)

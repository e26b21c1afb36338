"""Test helpers: tiny models and inputs built from private RNGs, so tests never disturb each other,
and the node pack imported as ComfyUI imports it, with one call per node. Shared fixtures are in
conftest.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import torch

from phenaki_core import MINILM_SPEC, Phenaki, TextCondition, preset, save_bundle

ROOT = Path(__file__).resolve().parents[1]
PACK = "phenaki_comfyui_pack"


def perturbed(build, seed: int = 0) -> torch.nn.Module:
    """``build()`` under a private RNG seeded with ``seed``, every weight nudged by 0.05 N(0, 1) (so no
    parameter is a constant), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.05 * torch.randn_like(param))
    return model.eval()


def build_tiny(seed: int = 0, **changes) -> Phenaki:
    """A tiny Phenaki with deterministic, slightly perturbed weights."""
    config = preset("tiny")
    if changes:
        config = config.replace(**changes)
    return perturbed(lambda: Phenaki(config), seed)


def random_text(batch: int, length: int = 5, dim: int = 24, seed: int = 0, pad_last: int = 0) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    embeds = torch.randn(batch, length, dim, generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    if pad_last:
        mask[-1, -pad_last:] = False
        embeds[-1, -pad_last:] = 0
    return TextCondition(embeds, mask)


def random_video(batch: int, frames: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=g)


def load_pack():
    """Import the node pack like ComfyUI does: ``spec_from_file_location`` on the root ``__init__.py``."""
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK]


def save_tiny_bundle(path: Path, seed: int = 0) -> Path:
    """A tiny model with MiniLM-sized text (384) that makes up to 17 frames of 8x8."""
    base = build_tiny().config
    maskgit = dataclasses.replace(base.maskgit, text_dim=384, max_seq_len=base.cvivit.num_tokens(17))
    return save_bundle(path, build_tiny(seed, maskgit=maskgit), MINILM_SPEC)


def pack_parts():
    """(pack, NODE_CLASS_MAPPINGS, glue, comfy_adapter) of the pack, imported like ComfyUI does."""
    pack = load_pack()
    return (pack, pack.NODE_CLASS_MAPPINGS, sys.modules[f"{PACK}.nodes.glue"],
            sys.modules[f"{PACK}.nodes.comfy_adapter"])


# One call per node, with the nodes' own argument order (saved graphs pass widget values by position)
# and small defaults: 2 steps, 9 frames a scene.
STEPS = 2


def sample_scene(model, cond, frames=9, steps=STEPS, cond_scale=3.0, temperature=0.9, critic_noise=1.0, seed=0,
                 **optional):
    (tokens,) = load_pack().NODE_CLASS_MAPPINGS["PhenakiSampleScene"]().sample(
        model, cond, frames, steps, cond_scale, temperature, critic_noise, seed, **optional)
    return tokens


def chain_scenes(model, prompts, frames=9, prime_frames=5, steps=STEPS, cond_scale=3.0, temperature=0.9,
                 critic_noise=1.0, seed=0, **optional):
    """(images, fps, scene starts) of Phenaki Chain Scenes."""
    return load_pack().NODE_CLASS_MAPPINGS["PhenakiChainScenes"]().chain(
        model, prompts, frames, prime_frames, steps, cond_scale, temperature, critic_noise, seed, **optional)


def encode_video(model, images, **optional):
    """The tokens of Phenaki Encode Video; its report must be one line."""
    tokens, report = load_pack().NODE_CLASS_MAPPINGS["PhenakiEncodeVideo"]().encode(model, images, **optional)
    assert isinstance(report, str) and "\n" not in report and "1 frames" not in report
    return tokens


def decode(tokens, include_prime=True):
    """(images, fps) of Phenaki Decode."""
    return load_pack().NODE_CLASS_MAPPINGS["PhenakiDecode"]().decode(tokens, include_prime)

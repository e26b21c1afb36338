"""Test helpers: tiny models and inputs built from private RNGs, so tests never disturb each other."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import torch

from phenaki_core import MINILM_SPEC, Phenaki, TextCondition, preset, save_bundle

ROOT = Path(__file__).resolve().parents[1]
PACK = "phenaki_comfyui_pack"


def build_tiny(seed: int = 0, **changes) -> Phenaki:
    """A tiny Phenaki with deterministic, slightly perturbed weights (so no parameter is a constant)."""
    config = preset("tiny")
    if changes:
        config = config.replace(**changes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Phenaki(config)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.05 * torch.randn_like(param))
    return model.eval()


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

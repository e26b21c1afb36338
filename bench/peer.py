"""Build phenaki-pytorch 0.5.0 (the "peer") offline, with the same architecture as one of our configs.

The peer is for side-by-side measurements only; it is never a dependency of the project. This
module imports it lazily and only when asked (``bench.py --peer``), in an environment where it
is installed (e.g. a separate venv that also sees this checkout).

Offline recipe (docs/peer.md):
  * torchvision's compiled ops cannot load next to a CPU-only torch; ``import_peer`` from
    scripts/make_peer_fixtures.py defines dummy ``torchvision::*`` operator schemas and retries;
  * ``Phenaki(...)`` asks the hub for the T5 width: ``get_encoded_dim`` is patched first;
  * ``CViViT(..., use_vgg_and_gan=False)`` never downloads VGG16;
  * sampling encodes text through ``phenaki.encode_texts``: replaced by a function that returns
    the benchmark's random embeddings.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
_PEER = None


def import_peer():
    """``phenaki_pytorch.phenaki_pytorch``, imported with the CPU torchvision workaround."""
    global _PEER
    if _PEER is None:
        spec = importlib.util.spec_from_file_location("_make_peer_fixtures", ROOT / "scripts" / "make_peer_fixtures.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _PEER, _ = module.import_peer()
    return _PEER


def peer_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("phenaki-pytorch")


def maskgit_kwargs(config) -> dict[str, Any]:
    """Our MaskGitConfig -> peer MaskGit(...) kwargs (the peer's extra kwargs go to its Transformer)."""
    m = config.maskgit
    kwargs = dict(dim=m.dim, num_tokens=m.num_tokens, max_seq_len=m.max_seq_len, heads=m.heads, dim_head=m.dim_head,
                  depth=m.depth, ff_mult=m.ff_mult, gradient_shrink_alpha=m.gradient_shrink_alpha,
                  unconditional=m.unconditional, attn_dropout=m.attn_dropout, ff_dropout=m.ff_dropout)
    if not m.unconditional:
        kwargs["dim_context"] = m.text_dim
    return kwargs


def cvivit_kwargs(config) -> dict[str, Any]:
    c = config.cvivit
    return dict(dim=c.dim, codebook_size=c.codebook_size, image_size=c.image_size, patch_size=c.patch_size,
                temporal_patch_size=c.temporal_patch_size, spatial_depth=c.spatial_depth,
                temporal_depth=c.temporal_depth, dim_head=c.dim_head, heads=c.heads, channels=c.channels,
                use_vgg_and_gan=False, lookup_free_quantization=True)


@dataclass
class PeerModels:
    phenaki: Any  # peer Phenaki (critic=None): its .cvivit is an eval copy of `cvivit`
    maskgit: Any
    cvivit: Any
    set_text: Callable[[torch.Tensor], None]  # the embeddings encode_texts returns from now on


def build_peer(config, *, steps: int, device: torch.device, seed: int = 0) -> PeerModels:
    """A peer Phenaki with the architecture of our ``config`` (no critic), random weights."""
    peer = import_peer()
    text_dim = config.maskgit.text_dim
    peer.get_encoded_dim = lambda *_args, **_kwargs: text_dim  # no hub access for the T5 width
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        maskgit = peer.MaskGit(**maskgit_kwargs(config))
        cvivit = peer.CViViT(**cvivit_kwargs(config))
    phenaki = peer.Phenaki(maskgit=maskgit, cvivit=cvivit, critic=None, steps=steps, text_embed_dim=text_dim)
    phenaki.to(device)
    cvivit.to(device)
    state = {"embeds": None}

    def encode_texts(texts, output_device=None):
        embeds = state["embeds"]
        if embeds is None or embeds.shape[0] != len(texts):
            raise RuntimeError("bench: set_text() must be called with one row per prompt before peer sampling")
        return embeds.to(output_device if output_device is not None else embeds.device)

    phenaki.encode_texts = encode_texts
    return PeerModels(phenaki, maskgit, cvivit, lambda embeds: state.__setitem__("embeds", embeds))

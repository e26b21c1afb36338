"""Convert phenaki-pytorch 0.5.0 state dicts to this package's module names.

This is the only place that may read a pickle file, and only as an explicit user step, with
``torch.load(weights_only=True)`` (tensors and plain containers only, no code).

Renames (peer -> ours), per transformer layer ``N``:
    layers.N.0.*  -> layers.N.peg.*            layers.N.3.0.* -> layers.N.ff.norm.*
    layers.N.1.*  -> layers.N.self_attn.*      layers.N.3.1.* -> layers.N.ff.proj_in.*
    layers.N.2.*  -> layers.N.cross_attn.*     layers.N.3.4.* -> layers.N.ff.proj_out.*
    TokenCritic to_logits.0.* -> to_logits.*   SelfCritic to_pred.0.* -> to_pred.*
Dropped because they have no effect: the bias-free LayerNorms' zero ``beta`` buffers, and the
self-attention's zero-size ``null_kv`` and unused ``context_norm``.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Mapping

import torch

from .errors import CheckpointError

_LAYER_RENAMES = [
    (re.compile(r"(layers\.\d+)\.0\."), r"\1.peg."),
    (re.compile(r"(layers\.\d+)\.1\."), r"\1.self_attn."),
    (re.compile(r"(layers\.\d+)\.2\."), r"\1.cross_attn."),
    (re.compile(r"(layers\.\d+)\.3\.0\."), r"\1.ff.norm."),
    (re.compile(r"(layers\.\d+)\.3\.1\."), r"\1.ff.proj_in."),
    (re.compile(r"(layers\.\d+)\.3\.4\."), r"\1.ff.proj_out."),
]
_HEAD_RENAMES = [
    (re.compile(r"^to_logits\.0\."), "to_logits."),
    (re.compile(r"^to_pred\.0\."), "to_pred."),
]


def _is_dead(key: str, tensor: torch.Tensor) -> bool:
    if key.endswith(".beta"):
        if torch.count_nonzero(tensor):
            raise CheckpointError(f"{key} is a non-zero LayerNorm bias; this is not a phenaki-pytorch 0.5.0 state dict")
        return True
    if re.search(r"\.self_attn\.context_norm\.", key):
        return True
    return bool(re.search(r"\.self_attn\.null_kv$", key)) and tensor.numel() == 0


def convert_peer_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename one peer module's state dict (MaskGit, TokenCritic or SelfCritic head) to ours."""
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        new = key
        for pattern, replacement in _LAYER_RENAMES + _HEAD_RENAMES:
            new = pattern.sub(replacement, new)
        if _is_dead(new, tensor):
            continue
        converted[new] = tensor
    return converted


def load_peer_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a phenaki-pytorch ``.pt`` state dict safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only=True met something that is not a tensor or container
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"{path.name} holds Python objects{what} besides tensors, which could run code when "
                              f"loaded, so it is refused; save a plain state dict of tensors and convert that") from None
    except Exception as exc:  # torch raises RuntimeError and others for corrupt files; keep one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path.name} could not be read as a plain tensor state dict (truncated or "
                              f"corrupt?): {first}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # the peer trainer's save format
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name} does not hold a state dict of tensors")
    return state


def split_peer_phenaki(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Split a peer ``Phenaki`` state dict into converted ``maskgit`` and ``critic`` parts."""
    parts: dict[str, dict[str, torch.Tensor]] = {"maskgit": {}, "critic": {}}
    for key, tensor in state.items():
        prefix, _, rest = key.partition(".")
        if prefix in parts and not rest.startswith("maskgit."):  # SelfCritic repeats the MaskGit
            parts[prefix][rest] = tensor
    return {name: convert_peer_state_dict(part) for name, part in parts.items()}

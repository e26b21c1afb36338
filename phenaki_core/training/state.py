"""Training checkpoints: model, EMA, optimizer and RNG state in one ``.safetensors`` file.

Nothing is pickled. Tensors go in as flat keys; everything else (step, configs, optimizer
hyper-parameters) goes into the header as JSON:

    model.<key>          the live weights
    ema.<key>            the exponential moving average of the weights
    optim.<i>.<name>     AdamW state of parameter i (exp_avg, exp_avg_sq, step)
    rng.train            optional: the state of one sequential torch.Generator. The trainer does
                         not write it: each micro-batch's generator comes from (seed, step, slot),
                         so nothing but the step is needed to continue (see distributed.py)

The file is written to a temporary name and renamed, so a crash leaves the previous checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..checkpoint import SafetensorError, atomic_write
from ..errors import CheckpointError

STATE_FORMAT = "phenaki-train-state"


@dataclass
class TrainState:
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    generator: Optional[torch.Tensor]
    info: dict[str, Any]  # configs and anything else JSON-serialisable


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    tensors = {}
    for index, per_param in state_dict["state"].items():
        for name, value in per_param.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim.{index}.{name}"] = tensor.detach().contiguous().cpu()
    return tensors, state_dict["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    return {"state": state, "param_groups": groups}


def save_train_state(path: str | os.PathLike, state: TrainState) -> Path:
    tensors: dict[str, torch.Tensor] = {}
    for prefix, part in (("model", state.model), ("ema", state.ema)):
        for key, tensor in part.items():
            tensors[f"{prefix}.{key}"] = tensor.detach().contiguous().cpu()
    optim_tensors, groups = _flatten_optimizer(state.optimizer)
    tensors.update(optim_tensors)
    if state.generator is not None:
        tensors["rng.train"] = state.generator.contiguous().cpu()
    metadata = {"format": STATE_FORMAT, "step": str(state.step),
                "optimizer_groups": json.dumps(groups), "info": json.dumps(state.info, sort_keys=True)}
    path = Path(path)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def read_state_header(path: str | os.PathLike) -> tuple[int, dict[str, Any]]:
    """(step, info) of a training checkpoint, from its header alone (no tensors are read)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:  # one open: the file may be replaced by a running trainer
            length = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(length))
        meta = header.get("__metadata__") or {}
        if meta.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path.name} is not a Phenaki training checkpoint")
        return int(meta["step"]), json.loads(meta["info"])
    except (OSError, KeyError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"could not read training checkpoint {path} ({exc}); restore it, or start the run "
                              f"over with --no-resume") from None


def load_train_state(path: str | os.PathLike) -> TrainState:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != STATE_FORMAT:
                raise CheckpointError(f"{path.name} is not a Phenaki training checkpoint")
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        step = int(meta["step"])
        groups = json.loads(meta["optimizer_groups"])
        info = json.loads(meta["info"])
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"could not read training checkpoint {path} ({exc}); restore it, or start the run "
                              f"over with --no-resume") from None
    parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "optim": {}}
    generator = None
    for key, tensor in tensors.items():
        prefix, _, rest = key.partition(".")
        if prefix == "rng":
            generator = tensor
        elif prefix == "optim":
            parts["optim"][key] = tensor
        else:
            parts[prefix][rest] = tensor
    return TrainState(step, parts["model"], parts["ema"], _unflatten_optimizer(parts["optim"], groups), generator,
                      info)

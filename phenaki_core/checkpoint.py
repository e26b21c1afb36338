"""One ``.safetensors`` file per model bundle, with its config in the header.

Header metadata (all strings, as safetensors requires):
    format          "phenaki-bundle"
    format_version  "1"
    config          PhenakiConfig as JSON
    text_encoder    TextEncoderSpec as JSON (name, dim, sha256, max_length)
    extra           optional JSON (training steps, notes, ...)

Loading builds the modules from that config on the meta device and assigns the tensors with a
strict ``load_state_dict``: a missing, unexpected or mis-shaped tensor is an error. Pickle files
are never opened; ``convert.py`` turns phenaki-pytorch ``.pt`` files into bundles explicitly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import safetensors
import safetensors.torch
from safetensors.torch import save_file

from .config import PhenakiConfig
from .errors import CheckpointError, ConfigError, TextEncoderError
from .files import atomic_write  # noqa: F401 - part of this module's API
from .phenaki import Phenaki
from .text import TextEncoderSpec

SafetensorError = getattr(safetensors, "SafetensorError", Exception)
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on a header
FORMAT = "phenaki-bundle"
FORMAT_VERSION = "1"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # the names users type
_DTYPES = {**DTYPES, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Bundle:
    model: Phenaki
    text_encoder: TextEncoderSpec
    extra: dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None


def bundle_state_dict(model: Phenaki, dtype: Optional[torch.dtype] = None) -> dict[str, torch.Tensor]:
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[key] = tensor.contiguous().cpu()
    return state


def save_bundle(path: str | os.PathLike, model: Phenaki, text_encoder: TextEncoderSpec, *,
                dtype: Optional[torch.dtype] = None, extra: Optional[dict[str, Any]] = None) -> Path:
    """Write a bundle atomically. ``dtype`` (e.g. torch.float16) shrinks the file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"bundles are saved as .safetensors files, got {path.name!r}")
    if model.config.maskgit.text_dim != text_encoder.dim and not model.config.maskgit.unconditional:
        raise CheckpointError(f"the model expects {model.config.maskgit.text_dim}-d text but the text encoder "
                              f"{text_encoder.describe()} gives {text_encoder.dim}-d")
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_json(),
        "text_encoder": json.dumps(text_encoder.to_dict(), sort_keys=True),
        "extra": json.dumps(extra or {}, sort_keys=True),
    }
    state = bundle_state_dict(model, dtype)
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))
    return path


def _resolve(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path.name} is a pickle file, which can run code when loaded, so it is refused. "
                              f"Convert it once with `phenaki convert {path.name} out.safetensors` "
                              f"(reads it with weights_only=True)")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; pass the bundle's .safetensors file inside it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{path.name} is not a .safetensors file; Phenaki bundles are .safetensors")
    return path


def _header_metadata(head: bytes, name: str) -> dict[str, Any]:
    """The ``__metadata__`` of a safetensors header: 8 bytes of little-endian length, then JSON."""
    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{name} is not a readable safetensors file (truncated or corrupt?): {why}")

    if len(head) < 8:
        raise corrupt("shorter than a safetensors header")
    length = int.from_bytes(head[:8], "little")
    if len(head) < 8 + length:
        raise corrupt(f"its header claims {length} bytes, the file is shorter")
    try:
        header = json.loads(head[8:8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise corrupt(f"its header is not JSON ({exc})") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(header, dict) or not isinstance(metadata or {}, dict):
        raise corrupt("its header is not a safetensors header")
    return metadata or {}


def _read_header(path: Path) -> bytes:
    """Just the header, through one open file."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) == 8:
                head += handle.read(min(int.from_bytes(head, "little"), MAX_HEADER_BYTES))
    except OSError as exc:
        raise CheckpointError(f"could not read {path.name}: {exc}") from None
    return head


def _parse_metadata(metadata: dict[str, Any], path: Path) -> tuple[PhenakiConfig, TextEncoderSpec, dict[str, Any]]:
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is a safetensors file but not a Phenaki bundle (no format={FORMAT!r} "
                              f"in its metadata); convert phenaki-pytorch weights with `phenaki convert`")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path.name} has bundle format version {metadata.get('format_version')!r}; this "
                              f"version of phenaki_core reads version {FORMAT_VERSION}")
    for key in ("config", "text_encoder"):
        if key not in metadata:
            raise CheckpointError(f"{path.name} has no {key!r} entry in its metadata")
    try:
        config = PhenakiConfig.from_json(metadata["config"])
        text_encoder = TextEncoderSpec.from_dict(json.loads(metadata["text_encoder"]))
        extra = json.loads(metadata.get("extra", "{}"))
    except (ConfigError, TextEncoderError) as exc:
        raise CheckpointError(f"{path.name} has an invalid config: {exc}") from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise CheckpointError(f"{path.name} has metadata that is not valid JSON: {exc}") from None
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path.name}: the 'extra' metadata must be a JSON object")
    if not config.maskgit.unconditional and config.maskgit.text_dim != text_encoder.dim:
        raise CheckpointError(f"{path.name} is inconsistent: its model takes {config.maskgit.text_dim}-d text but "
                              f"its text encoder record is {text_encoder.describe()}; re-export the bundle")
    return config, text_encoder, extra


def read_metadata(path: str | os.PathLike) -> tuple[PhenakiConfig, TextEncoderSpec, dict[str, Any]]:
    """Parse and validate a bundle's header without reading its tensors."""
    path = _resolve(path)
    return _parse_metadata(_header_metadata(_read_header(path), path.name), path)


def load_bundle(path: str | os.PathLike, *, device: torch.device | str = "cpu",
                dtype: Optional[torch.dtype | str] = None,
                expected_text_encoder: Optional[TextEncoderSpec] = None,
                expected_config: Optional[PhenakiConfig] = None) -> Bundle:
    """Load a bundle strictly. ``dtype`` casts floating weights (fp32 / bf16 / fp16).

    The file is read once, header and tensors together: a training run may rename a new bundle
    over it at any moment, and reading it twice (as ``safe_open`` does) could pair one file's
    header with the other's tensors.
    """
    path = _resolve(path)
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise CheckpointError(f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}")
        dtype = _DTYPES[dtype]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"could not read {path.name}: {exc}") from None
    config, text_encoder, extra = _parse_metadata(_header_metadata(data, path.name), path)
    if expected_config is not None and expected_config != config:
        raise CheckpointError(f"{path.name} holds a different architecture than expected; its config is "
                              f"{config.to_json()}")
    if expected_text_encoder is not None and not expected_text_encoder.matches(text_encoder):
        raise CheckpointError(f"{path.name} was trained with text encoder {text_encoder.describe()}, but "
                              f"{expected_text_encoder.describe()} is in use; load the matching encoder")
    try:
        state = safetensors.torch.load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"could not read the tensors of {path.name} (truncated or corrupt?): {exc}") from None
    del data

    with torch.device("meta"):
        model = Phenaki(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path.name} does not match its config: missing tensors {missing[:5]}"
                              f"{'…' if len(missing) > 5 else ''}, unexpected tensors {unexpected[:5]}"
                              f"{'…' if len(unexpected) > 5 else ''}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{path.name}: tensor {key} has shape {tuple(state[key].shape)}, "
                                  f"the config needs {tuple(tensor.shape)}")
        if not state[key].dtype.is_floating_point == tensor.dtype.is_floating_point:
            raise CheckpointError(f"{path.name}: tensor {key} has dtype {state[key].dtype}, the model needs "
                                  f"{tensor.dtype}; the file is damaged or not a Phenaki bundle")
        if state[key].is_floating_point() and not bool(torch.isfinite(state[key]).all()):
            raise CheckpointError(f"{path.name}: tensor {key} holds NaN or infinite values (a diverged training run, "
                                  f"or an fp16 export that overflowed); use an earlier or fp32 checkpoint")
    target = dtype or torch.float32
    state = {k: v.to(device=device, dtype=target if v.is_floating_point() else v.dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)  # the model has no non-persistent buffers
    model.eval()
    return Bundle(model, text_encoder, extra, path)


def with_decoder_from(bundle: Bundle, donor: Bundle) -> Bundle:
    """``bundle`` with the tokenizer decoder of ``donor``: the result of a ``--decoder-only`` run
    (trained alongside a stage-2 run on the same tokenizer) put together with that stage-2 model.
    The encoders must be bit-identical, so every token id the transformer learned means what it
    meant; the decoder's modules (and its pixel refiner) come from ``donor``, the rest from ``bundle``."""
    mine, theirs = bundle.model.config.cvivit, donor.model.config.cvivit
    if not mine.differs_only_in_refiner(theirs):
        raise CheckpointError("the two bundles' tokenizers have other geometries; a decoder fits only the encoder "
                              "it was trained with")
    decoder = {id(p) for module in donor.model.cvivit.decoder_modules() for p in module.parameters()}
    decoder_names = {f"cvivit.{n}" for n, p in donor.model.cvivit.named_parameters() if id(p) in decoder}
    own, given = bundle.model.state_dict(), donor.model.state_dict()
    for name, tensor in own.items():
        if name.startswith("cvivit.") and name not in decoder_names and not torch.equal(tensor, given[name]):
            raise CheckpointError(f"the two bundles' encoders differ ({name}); --decoder-from takes the decoder of a "
                                  f"--decoder-only run of this bundle's own tokenizer")
    model = Phenaki(bundle.model.config.replace(cvivit=theirs))
    model.load_state_dict({**own, **{n: given[n] for n in decoder_names}}, strict=True)
    history = list(bundle.extra.get("history", []))
    history += [h for h in donor.extra.get("history", []) if h.get("decoder_only") and h not in history]
    return Bundle(model.to(next(bundle.model.parameters()).dtype), bundle.text_encoder,
                  {**bundle.extra, "history": history}, bundle.path)

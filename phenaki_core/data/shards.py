"""Token shards: videos tokenized once by the frozen C-ViViT, captions encoded once, for stage 2.

Stage 2 trains MaskGit on token ids from a frozen tokenizer, so decoding and tokenizing every
clip every epoch is wasted work. :func:`precompute_shards` does it once and writes::

    out_dir/
      shard_00000.safetensors   ids, frame masks, text embeddings of up to ``shard_size`` clips
      shard_00001.safetensors
      index.json                what the shards hold and which tokenizer / text encoder made them

Shard tensors (safetensors; captions and paths are JSON in the header, nothing is pickled)::

    ids            int32 (n, t, y, x)   token ids, t = 1 + (f - 1) / temporal_patch
    frame_mask     bool  (n, f)         True on real frames (see VideoFolderDataset)
    caption_index  int64 (n,)           row of each item's caption in the shard's caption list
    text_offsets   int64 (u + 1,)       caption k's embeddings are text_embeds[off[k]:off[k+1]]
    text_embeds    float32 (rows, d)    unpadded per-token text embeddings (only with a text encoder)

Each distinct caption is encoded alone (so its embedding never depends on its batch) and once, by
the same ``text.CaptionEncoder`` the trainer uses: results are cached across shards (up to ``caption_cache``
captions) and stored once per shard. Shards and the index are written atomically; the index
is written last, so a folder without ``index.json`` is an unfinished run.

``index.json`` records the tokenizer's config and a sha256 of its weights, and the text
encoder's identity; :class:`TokenShardDataset` checks them against the model you train with
(``model=`` / :meth:`ShardIndex.check_model`) and refuses a mismatch with a
:class:`CheckpointError` naming both.
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset, Subset

from ..checkpoint import SafetensorError, atomic_write
from ..cvivit import token_frame_mask
from ..errors import CheckpointError, ConfigError, InputError
from ..text import CaptionEncoder, TextEncoderSpec, file_sha256
from ..text_condition import TextCondition
from ..validation import is_int

logger = logging.getLogger(__name__)

INDEX_FILE = "index.json"
INDEX_FORMAT = "phenaki-token-shards"
SHARD_FORMAT = "phenaki-token-shard"
FORMAT_VERSION = 1
SHARD_PATTERN = "shard_{:05d}.safetensors"


# --------------------------------------------------------------------------------------------
# Tokenizer identity
# --------------------------------------------------------------------------------------------

def _tokenizer_of(model: Any) -> torch.nn.Module:
    """The C-ViViT of a Phenaki model, or the model itself if it is a tokenizer."""
    cvivit = getattr(model, "cvivit", model)
    if not hasattr(cvivit, "encode_to_ids") or not hasattr(cvivit, "config"):
        raise ConfigError(f"expected a Phenaki model or a CViViT tokenizer, got {type(model).__name__}")
    return cvivit


def tokenizer_fingerprint(model: Any) -> dict[str, Any]:
    """``{"config": CViViT config dict, "sha256": hash of its weights}`` for a Phenaki or CViViT.

    Floating weights are hashed as float32, so fp16/bf16 casts of the same checkpoint agree.
    """
    cvivit = _tokenizer_of(model)
    digest = hashlib.sha256()
    for key, tensor in sorted(cvivit.state_dict().items()):
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.float()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"config": asdict(cvivit.config), "sha256": digest.hexdigest()}


# --------------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardInfo:
    file: str
    count: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ShardIndex:
    """The parsed, validated ``index.json`` of a shard folder."""

    root: Path
    num_items: int
    num_frames: int
    token_shape: tuple[int, int, int]
    tokenizer: dict[str, Any]
    text_encoder: Optional[TextEncoderSpec]
    text_dim: Optional[int]
    shards: tuple[ShardInfo, ...]
    source: dict[str, Any]

    @property
    def temporal_patch(self) -> int:
        return int(self.tokenizer["config"]["temporal_patch_size"])

    def to_json(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT, "format_version": FORMAT_VERSION, "num_items": self.num_items,
            "num_frames": self.num_frames, "token_shape": list(self.token_shape), "tokenizer": self.tokenizer,
            "text_encoder": self.text_encoder.to_dict() if self.text_encoder else None, "text_dim": self.text_dim,
            "shards": [asdict(s) for s in self.shards], "source": self.source,
        }

    def check_model(self, model: Any, text_spec: Optional[TextEncoderSpec] = None) -> None:
        """Raise :class:`CheckpointError` unless ``model`` (Phenaki or CViViT) has the tokenizer
        these shards were made with, and ``text_spec`` (if given) matches their text encoder."""
        theirs = self.tokenizer
        mine = tokenizer_fingerprint(model)
        if mine["config"] != theirs["config"]:
            changed = sorted(k for k in set(mine["config"]) | set(theirs["config"])
                             if mine["config"].get(k) != theirs["config"].get(k))
            raise CheckpointError(
                f"the token shards in {self.root} were made with a different tokenizer config: "
                + ", ".join(f"{k}={theirs['config'].get(k)!r} (shards) vs {mine['config'].get(k)!r} (model)"
                            for k in changed) + "; precompute the shards again with this model")
        if mine["sha256"] != theirs["sha256"]:
            raise CheckpointError(
                f"the token shards in {self.root} were made with other tokenizer weights (sha256 "
                f"{theirs['sha256'][:12]}…) than this model's (sha256 {mine['sha256'][:12]}…); the ids would "
                f"mean something else. Load the tokenizer they were made with, or precompute them again")
        maskgit = getattr(getattr(model, "config", None), "maskgit", None)
        tokens = self.token_shape[0] * self.token_shape[1] * self.token_shape[2]
        if maskgit is not None and tokens > maskgit.max_seq_len:
            raise CheckpointError(f"the shards hold {tokens} tokens per clip but the model's MaskGit takes at "
                                  f"most {maskgit.max_seq_len} (max_seq_len); use fewer frames")
        if maskgit is not None and not maskgit.unconditional and self.text_dim not in (None, maskgit.text_dim):
            raise CheckpointError(f"the shards hold {self.text_dim}-d text embeddings but the model expects "
                                  f"{maskgit.text_dim}-d ({self.text_encoder.describe() if self.text_encoder else ''})")
        if text_spec is not None:
            if self.text_encoder is None:
                raise CheckpointError(f"the token shards in {self.root} have no text embeddings (made without a "
                                      f"text encoder) but {text_spec.describe()} was expected")
            if not self.text_encoder.matches(text_spec):
                raise CheckpointError(f"the token shards in {self.root} were encoded with "
                                      f"{self.text_encoder.describe()}, not {text_spec.describe()}")


def _require(condition: bool, root: Path, message: str) -> None:
    if not condition:
        raise CheckpointError(f"{root / INDEX_FILE}: {message}; the shard folder is corrupt or from another "
                              f"tool, precompute it again")


def read_index(root: str | os.PathLike) -> ShardIndex:
    """Parse and validate ``root/index.json`` (and check that every shard file is there, whole)."""
    root = Path(root).expanduser().resolve()
    path = root / INDEX_FILE
    if not path.is_file():
        hint = " (shard files are there: the precompute run did not finish)" if any(root.glob("shard_*")) else ""
        raise CheckpointError(f"{root} is not a token shard folder: no {INDEX_FILE}{hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not readable JSON: {exc}") from None
    _require(isinstance(data, dict), root, "not a JSON object")
    _require(data.get("format") == INDEX_FORMAT, root, f"format is {data.get('format')!r}, not {INDEX_FORMAT!r}")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {data.get('format_version')!r}; this version of "
                              f"phenaki_core reads version {FORMAT_VERSION}. Precompute the shards again")
    shape = data.get("token_shape")
    _require(isinstance(shape, list) and len(shape) == 3 and all(is_int(v, 1) for v in shape), root,
             f"token_shape must be three positive ints, got {shape!r}")
    for key in ("num_items", "num_frames"):
        _require(is_int(data.get(key), 1), root, f"{key} must be a positive int, got {data.get(key)!r}")
    tok = data.get("tokenizer")
    _require(isinstance(tok, dict) and isinstance(tok.get("config"), dict) and isinstance(tok.get("sha256"), str)
             and is_int(tok["config"].get("temporal_patch_size"), 1), root, "bad 'tokenizer' record")
    text = data.get("text_encoder")
    spec = None
    if text is not None:
        try:
            spec = TextEncoderSpec.from_dict(text)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: bad 'text_encoder' record: {exc}") from None
        _require(is_int(data.get("text_dim"), 1), root, "text_dim must be a positive int")
    shards = data.get("shards")
    _require(isinstance(shards, list) and shards, root, "no shards listed")
    infos = []
    for entry in shards:
        _require(isinstance(entry, dict) and isinstance(entry.get("file"), str) and is_int(entry.get("count"), 1)
                 and is_int(entry.get("bytes"), 0) and isinstance(entry.get("sha256"), str), root,
                 f"bad shard entry {entry!r}")
        name = entry["file"]
        _require(name == Path(name).name and name.endswith(".safetensors"), root, f"bad shard file name {name!r}")
        file = root / name
        if not file.is_file():
            raise CheckpointError(f"shard {file} listed in {path} is missing")
        if file.stat().st_size != entry["bytes"]:
            raise CheckpointError(f"shard {file} has {file.stat().st_size} bytes, the index says {entry['bytes']} "
                                  f"(truncated or replaced); precompute the shards again")
        infos.append(ShardInfo(name, entry["count"], entry["bytes"], entry["sha256"]))
    _require(sum(s.count for s in infos) == data["num_items"], root, "shard counts do not add up to num_items")
    t, pt = shape[0], tok["config"]["temporal_patch_size"]
    _require(data["num_frames"] == 1 + (t - 1) * pt, root, "num_frames does not match token_shape")
    source = data.get("source", {})
    return ShardIndex(root, data["num_items"], data["num_frames"], tuple(shape), tok, spec,
                      data.get("text_dim") if spec else None, tuple(infos), source if isinstance(source, dict) else {})


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def _collate_videos(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack dataset items; ``frame_mask`` defaults to all frames, ``path`` to ""."""
    video = torch.stack([item["video"] for item in items])                   # (b, c, f, h, w)
    f = video.shape[2]
    masks = [item.get("frame_mask") for item in items]
    frame_mask = torch.stack([m.bool() if isinstance(m, torch.Tensor) else torch.ones(f, dtype=torch.bool)
                              for m in masks])                                # (b, f)
    return {"video": video, "frame_mask": frame_mask, "caption": [item.get("caption") for item in items],
            "path": [str(item.get("path", "")) for item in items]}


def _write_shard(path: Path, ids: list[torch.Tensor], masks: list[torch.Tensor], captions: list[str],
                 paths: list[str], text: Optional[CaptionEncoder]) -> ShardInfo:
    unique = list(dict.fromkeys(captions))
    position = {c: i for i, c in enumerate(unique)}
    tensors = {
        "ids": torch.cat(ids).to(torch.int32).contiguous(),                        # (n, t, y, x)
        "frame_mask": torch.cat(masks).bool().contiguous(),                        # (n, f)
        "caption_index": torch.tensor([position[c] for c in captions], dtype=torch.int64),  # (n,)
    }
    if text is not None:
        rows = [text.rows(c) for c in unique]
        tensors["text_embeds"] = torch.cat(rows).contiguous()                       # (rows, d)
        lengths = torch.tensor([0] + [r.shape[0] for r in rows], dtype=torch.int64)
        tensors["text_offsets"] = torch.cumsum(lengths, 0)                          # (u + 1,)
    metadata = {"format": SHARD_FORMAT, "format_version": str(FORMAT_VERSION), "count": str(len(captions)),
                "captions": json.dumps(unique), "paths": json.dumps(paths)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return ShardInfo(path.name, len(captions), path.stat().st_size, file_sha256(path))


def _source_record(dataset: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"dataset": type(dataset).__name__, "length": len(dataset)}
    if hasattr(dataset, "root"):
        record["root"] = str(dataset.root)
    config = getattr(dataset, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        record["config"] = config.to_dict()
    elif config is not None:
        try:
            record["config"] = asdict(config)
        except TypeError:
            pass
    for key in ("seed", "epoch"):
        if isinstance(getattr(dataset, key, None), int):
            record[key] = getattr(dataset, key)
    return record


def check_output_folder(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """The resolved shard folder; refuses one that already holds shards unless ``overwrite``."""
    out_dir = Path(out_dir).expanduser().resolve()
    if (out_dir / INDEX_FILE).exists() or (out_dir.is_dir() and any(out_dir.glob("shard_*.safetensors"))):
        if not overwrite:
            raise ConfigError(f"{out_dir} already holds token shards; pass overwrite=True (--overwrite) or choose "
                              f"another folder")
    return out_dir


def _text_spec_for(model: Any, text_encoder: Any, text_spec: Optional[TextEncoderSpec]) -> Optional[TextEncoderSpec]:
    """The identity of the encoder that makes the shards' embeddings, checked against the model."""
    if text_encoder is None:
        spec = None
    else:
        spec = text_spec if text_spec is not None else getattr(text_encoder, "spec", None)
        if not isinstance(spec, TextEncoderSpec):
            raise ConfigError("the text encoder has no .spec; pass text_spec=TextEncoderSpec(name, dim, ...) so the "
                              "shards record which encoder made their embeddings")
    maskgit = getattr(getattr(model, "config", None), "maskgit", None)
    if maskgit is not None and not maskgit.unconditional:
        if spec is None:
            raise ConfigError("this model is text-conditioned: pass its text encoder (e.g. load_minilm())")
        if spec.dim != maskgit.text_dim:
            raise ConfigError(f"the text encoder {spec.describe()} gives {spec.dim}-d embeddings but the model "
                              f"expects {maskgit.text_dim}-d")
    return spec


class ShardWriter:
    """Buffers tokenized clips and writes them as shards of ``shard_size``, then the index."""

    def __init__(self, out_dir: Path, shard_size: int, text: Optional[CaptionEncoder]) -> None:
        self.out_dir, self.shard_size, self.text = out_dir, shard_size, text
        self.shards: list[ShardInfo] = []
        self.ids: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []
        self.captions: list[str] = []
        self.paths: list[str] = []
        self.token_shape: Optional[tuple[int, int, int]] = None
        self.num_frames = 0

    def add(self, ids: torch.Tensor, frame_mask: torch.Tensor, captions: list[str], paths: list[str]) -> None:
        """ids (b, t, y, x), frame_mask (b, f); writes every full shard."""
        if self.token_shape is None:
            self.token_shape, self.num_frames = tuple(ids.shape[1:]), frame_mask.shape[1]
        elif tuple(ids.shape[1:]) != self.token_shape:
            raise InputError(f"clips must all have the same shape; got token grid {tuple(ids.shape[1:])} "
                             f"after {self.token_shape}")
        self.ids.append(ids)
        self.masks.append(frame_mask)
        self.captions.extend(captions)
        self.paths.extend(paths)
        while len(self.captions) >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, upto: int) -> None:
        """Write the first ``upto`` buffered items as the next shard."""
        ids, masks = torch.cat(self.ids), torch.cat(self.masks)
        info = _write_shard(self.out_dir / SHARD_PATTERN.format(len(self.shards)), [ids[:upto]], [masks[:upto]],
                            self.captions[:upto], self.paths[:upto], self.text)
        self.shards.append(info)
        self.ids, self.masks = [ids[upto:]], [masks[upto:]]
        self.captions, self.paths = self.captions[upto:], self.paths[upto:]

    def finish(self, fingerprint: dict[str, Any], spec: Optional[TextEncoderSpec],
               source: dict[str, Any]) -> ShardIndex:
        """Write the last shard and the index (last: a folder without it is unfinished); remove
        shards an earlier run left beyond the new ones."""
        if self.captions:
            self._flush(len(self.captions))
        index = ShardIndex(self.out_dir, sum(s.count for s in self.shards), self.num_frames, self.token_shape,
                           fingerprint, spec, spec.dim if spec is not None else None, tuple(self.shards), source)
        payload = json.dumps(index.to_json(), indent=1, sort_keys=True)
        atomic_write(self.out_dir / INDEX_FILE, lambda tmp: Path(tmp).write_text(payload, encoding="utf-8"))
        keep = {s.file for s in self.shards}
        for stale in self.out_dir.glob("shard_*.safetensors"):
            if stale.name not in keep:
                stale.unlink()
        return index


def _check_captions(batch: dict[str, Any], done: int) -> None:
    for i, caption in enumerate(batch["caption"]):
        if not isinstance(caption, str) or not caption.strip():
            raise InputError(f"item {batch['path'][i] or done + i} has no caption; text-conditioned shards need "
                             f"one per clip")


@torch.no_grad()
def precompute_shards(dataset: Dataset, model: Any, text_encoder: Any, out_dir: str | os.PathLike, *,
                      shard_size: int = 1024, batch_size: int = 8, device: Optional[str | torch.device] = None,
                      num_workers: int = 0, text_spec: Optional[TextEncoderSpec] = None,
                      max_items: Optional[int] = None, caption_cache: int = 8192, overwrite: bool = False,
                      progress: bool = True) -> ShardIndex:
    """Tokenize ``dataset`` with the frozen C-ViViT of ``model`` and encode its captions.

    ``dataset`` yields dicts with ``video`` (c, f, h, w) in [0, 1] and ``caption`` (plus optional
    ``frame_mask`` (f,) and ``path``), e.g. :class:`VideoFolderDataset`; items are read in order
    (``max_items`` caps how many: needed for endless datasets such as Shapes World).
    ``model``: a Phenaki model or a CViViT; it is used in eval mode and left as it was
    (mode and device). ``device``: where to tokenize; None = the model's device, another device
    tokenizes with a copy. ``text_encoder``: anything with ``encode([caption], device="cpu")``
    returning a TextCondition, or None for an unconditional model; its identity comes from its
    ``spec`` attribute or ``text_spec``. Returns the written :class:`ShardIndex`.
    """
    for name, value, minimum in (("shard_size", shard_size, 1), ("batch_size", batch_size, 1),
                                 ("num_workers", num_workers, 0), ("caption_cache", caption_cache, 1)):
        if not is_int(value, minimum):
            raise ConfigError(f"precompute_shards {name} must be an int >= {minimum}, got {value!r}")
    if max_items is not None and not is_int(max_items, 1):
        raise ConfigError(f"precompute_shards max_items must be a positive int or None, got {max_items!r}")
    cvivit = _tokenizer_of(model)
    spec = _text_spec_for(model, text_encoder, text_spec)
    out_dir = check_output_folder(out_dir, overwrite)
    (out_dir / INDEX_FILE).unlink(missing_ok=True)  # the old index must not describe the new shards
    out_dir.mkdir(parents=True, exist_ok=True)
    if max_items is not None and max_items < len(dataset):
        dataset = Subset(dataset, range(max_items))
    if len(dataset) == 0:
        raise InputError("the dataset is empty; nothing to precompute")
    source = {**_source_record(dataset.dataset if isinstance(dataset, Subset) else dataset), "items": len(dataset)}

    own_device = next(cvivit.parameters()).device
    target = torch.device(device) if device is not None else own_device
    tokenizer = cvivit if target == own_device else copy.deepcopy(cvivit).to(target)
    was_training = cvivit.training
    text = CaptionEncoder(text_encoder, caption_cache, spec) if text_encoder is not None else None
    writer = ShardWriter(out_dir, shard_size, text)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate_videos)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(dataset), desc="tokenizing", unit="clip", dynamic_ncols=True)
    tokenizer.eval()
    try:
        for batch in loader:
            if text is not None:
                _check_captions(batch, len(writer.captions) + sum(s.count for s in writer.shards))
            ids = tokenizer.encode_to_ids(batch["video"].to(target, non_blocking=True)).cpu()   # (b, t, y, x)
            writer.add(ids, batch["frame_mask"], [c if isinstance(c, str) else "" for c in batch["caption"]],
                       batch["path"])
            if bar is not None:
                bar.update(ids.shape[0])
    finally:
        cvivit.train(was_training)
        if bar is not None:
            bar.close()
    index = writer.finish(tokenizer_fingerprint(cvivit), spec, source)
    logger.info("wrote %d clips in %d shards to %s (%d captions encoded)", index.num_items, len(index.shards),
                out_dir, text.encoded if text is not None else 0)
    return index


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _ShardContents:
    captions: tuple[str, ...]
    paths: tuple[str, ...]


class TokenShardDataset(Dataset):
    """Items of a shard folder written by :func:`precompute_shards`::

        ids:         int64 (t, y, x)
        frame_mask:  bool (f,);   token_mask: bool (t,) (token frames with a real frame)
        text_embeds: float32 (n, d), unpadded (only when the shards have text)
        caption, path: str

    Batch them with :func:`collate_shards`. With ``model`` (and ``text_spec``), the shards are
    checked against the tokenizer / text encoder you train with. ``verify=True`` also checks
    each shard's sha256 (reads every byte). No file handle is kept: the dataset is picklable.
    """

    def __init__(self, root: str | os.PathLike, *, model: Any = None, text_spec: Optional[TextEncoderSpec] = None,
                 verify: bool = False) -> None:
        self.index = read_index(root)
        self.root = self.index.root
        if model is not None or text_spec is not None:
            if model is None:
                if self.index.text_encoder is None or not self.index.text_encoder.matches(text_spec):
                    have = self.index.text_encoder.describe() if self.index.text_encoder else "no text encoder"
                    raise CheckpointError(f"the token shards in {self.root} were encoded with {have}, "
                                          f"not {text_spec.describe()}")
            else:
                self.index.check_model(model, text_spec)
        self._contents = tuple(self._check_shard(info, verify) for info in self.index.shards)
        self._ends = [0]
        for info in self.index.shards:
            self._ends.append(self._ends[-1] + info.count)

    def _check_shard(self, info: ShardInfo, verify: bool) -> _ShardContents:
        path = self.root / info.file
        if verify and file_sha256(path) != info.sha256:
            raise CheckpointError(f"shard {path} does not match the sha256 in the index (changed or corrupt)")
        idx = self.index
        t, y, x = idx.token_shape
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"shard {path} is not a readable safetensors file: {exc}") from None
        bad = f"shard {path} is corrupt or does not belong to this index"
        if meta.get("format") != SHARD_FORMAT or meta.get("format_version") != str(FORMAT_VERSION):
            raise CheckpointError(f"{bad}: format {meta.get('format')!r} version {meta.get('format_version')!r}")
        try:
            captions, paths = json.loads(meta["captions"]), json.loads(meta["paths"])
            count = int(meta["count"])
        except (KeyError, ValueError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{bad}: unreadable metadata ({exc})") from None
        n = info.count
        expected = {"ids": (n, t, y, x), "frame_mask": (n, idx.num_frames), "caption_index": (n,)}
        if idx.text_encoder is not None:
            expected["text_offsets"] = (len(captions) + 1,)
        for key, shape in expected.items():
            if shapes.get(key) != shape:
                raise CheckpointError(f"{bad}: {key} has shape {shapes.get(key)}, expected {shape}")
        if idx.text_encoder is not None:
            rows = shapes.get("text_embeds")
            if rows is None or len(rows) != 2 or rows[1] != idx.text_dim:
                raise CheckpointError(f"{bad}: text_embeds has shape {rows}, expected (rows, {idx.text_dim})")
        if (count != n or not isinstance(captions, list) or not isinstance(paths, list) or len(paths) != n
                or not all(isinstance(c, str) for c in captions + paths)):
            raise CheckpointError(f"{bad}: its caption/path lists do not match its {n} items")
        return _ShardContents(tuple(captions), tuple(paths))

    def __len__(self) -> int:
        return self.index.num_items

    def locate(self, index: int) -> tuple[int, int]:
        """Global index -> (shard number, row in that shard)."""
        n = len(self)
        index = int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for TokenShardDataset of length {n}")
        shard = bisect.bisect_right(self._ends, index) - 1
        return shard, index - self._ends[shard]

    def __getitem__(self, index: int) -> dict[str, Any]:
        shard, row = self.locate(index)
        path = self.root / self.index.shards[shard].file
        contents = self._contents[shard]
        try:
            with safe_open(str(path), framework="pt") as handle:
                ids = handle.get_slice("ids")[row:row + 1][0].long()                      # (t, y, x)
                frame_mask = handle.get_slice("frame_mask")[row:row + 1][0].bool()         # (f,)
                k = int(handle.get_slice("caption_index")[row:row + 1][0])
                embeds = None
                if self.index.text_encoder is not None:
                    start, end = handle.get_slice("text_offsets")[k:k + 2].tolist()
                    embeds = handle.get_slice("text_embeds")[start:end].float()            # (n, d)
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read item {index} from shard {path}: {exc}") from None
        if not 0 <= k < len(contents.captions):
            raise CheckpointError(f"shard {path} row {row} points at caption {k}, which it does not have")
        item = {"ids": ids, "frame_mask": frame_mask,
                "token_mask": token_frame_mask(frame_mask, self.index.temporal_patch),
                "caption": contents.captions[k], "path": contents.paths[row]}
        if embeds is not None:
            item["text_embeds"] = embeds
        return item


def collate_shards(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`TokenShardDataset` items; text is zero-padded to the longest caption.

    Returns ids (b, t, y, x) long, frame_mask (b, f), token_mask (b, t), caption / path lists and,
    when the items have text, text_embeds (b, n, d) float32 with text_mask (b, n) bool (True =
    real token): ``TextCondition(batch["text_embeds"], batch["text_mask"])``.
    """
    if not items:
        raise InputError("collate_shards needs at least one item")
    batch: dict[str, Any] = {
        "ids": torch.stack([item["ids"] for item in items]),                  # (b, t, y, x)
        "frame_mask": torch.stack([item["frame_mask"] for item in items]),    # (b, f)
        "token_mask": torch.stack([item["token_mask"] for item in items]),    # (b, t)
        "caption": [item["caption"] for item in items],
        "path": [item["path"] for item in items],
    }
    if "text_embeds" in items[0]:
        text = TextCondition.from_rows([item["text_embeds"] for item in items])
        batch["text_embeds"], batch["text_mask"] = text.embeds, text.mask                             # (b, n, d), (b, n)
    return batch


__all__ = [
    "INDEX_FILE", "ShardIndex", "ShardInfo", "ShardWriter", "TokenShardDataset", "check_output_folder",
    "collate_shards", "precompute_shards",
    "read_index", "token_frame_mask", "tokenizer_fingerprint",
]

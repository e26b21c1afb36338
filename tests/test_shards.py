"""Token shards: precompute with a tiny model, reload, compare with direct encoding, detect mismatches."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from helpers import build_tiny
from phenaki_core import TextCondition, TextEncoderSpec
from phenaki_core.data import (TokenShardDataset, VideoFolderConfig, VideoFolderDataset, collate_shards,
                               precompute_shards, read_index, token_frame_mask, tokenizer_fingerprint)
from phenaki_core.errors import CheckpointError, ConfigError, InputError

SPEC = TextEncoderSpec("fake-words", 24)
CAPTIONS = ["a red circle", "two words", "one", "a red circle", "a much longer caption with many words"]


class FakeEncoder:
    """One embedding row per word plus one, deterministic per caption; counts its calls."""

    spec = SPEC

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def encode(self, prompts, device=None) -> TextCondition:
        assert len(prompts) == 1, "captions must be encoded one at a time"
        prompt = prompts[0]
        self.calls[prompt] += 1
        n = len(prompt.split()) + 1
        g = torch.Generator().manual_seed(sum(map(ord, prompt)))
        embeds = torch.zeros(1, n + 2, SPEC.dim)  # padded like a real batch encoder
        embeds[0, :n] = torch.randn(n, SPEC.dim, generator=g)
        mask = torch.arange(n + 2)[None] < n
        return TextCondition(embeds, mask)


def make_folder(root, count: int = 5) -> VideoFolderDataset:
    """GIF clips of varied lengths (one short, so padded) plus a still image, 8x8 like the tiny model."""
    rng = np.random.default_rng(0)
    for i in range(count):
        frames = [Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)) for _ in range(3 + 2 * i)]
        if len(frames) == 1:
            frames[0].save(root / f"c{i}.png")
        else:
            frames[0].save(root / f"c{i}.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.fromarray(rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)).save(root / "still.png")
    captions = [{"file": f"c{i}.gif", "caption": CAPTIONS[i % len(CAPTIONS)]} for i in range(count)]
    captions.append({"file": "still.png", "caption": "a still picture"})
    (root / "captions.jsonl").write_text("\n".join(json.dumps(c) for c in captions), encoding="utf-8")
    return VideoFolderDataset(root, VideoFolderConfig(image_size=8, num_frames=5, fps=None, offset="start"))


@pytest.fixture
def built(tmp_path):
    (tmp_path / "clips").mkdir()
    dataset = make_folder(tmp_path / "clips")
    model = build_tiny()
    encoder = FakeEncoder()
    index = precompute_shards(dataset, model, encoder, tmp_path / "shards", shard_size=4, batch_size=3,
                              progress=False)
    return dataset, model, encoder, index, tmp_path / "shards"


def test_roundtrip_matches_direct_encoding(built):
    dataset, model, encoder, index, out = built
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "shard_00000.safetensors",
                                                     "shard_00001.safetensors"]
    assert index.num_items == len(dataset) == 6 and [s.count for s in index.shards] == [4, 2]
    assert index.token_shape == model.config.cvivit.token_shape(5) and index.num_frames == 5
    assert index.text_encoder == SPEC and index.text_dim == SPEC.dim
    assert index.source["dataset"] == "VideoFolderDataset" and index.source["config"]["num_frames"] == 5
    shards = TokenShardDataset(out, model=model, text_spec=SPEC, verify=True)
    assert len(shards) == len(dataset)
    items = [dataset[i] for i in range(len(dataset))]
    with torch.no_grad():
        direct = model.cvivit.encode_to_ids(torch.stack([item["video"] for item in items]))
    for i, item in enumerate(items):
        got = shards[i]
        assert got["ids"].dtype == torch.long and torch.equal(got["ids"], direct[i])
        assert torch.equal(got["frame_mask"], item["frame_mask"])
        assert got["caption"] == item["caption"] and got["path"] == item["path"]
        cond = FakeEncoder().encode([item["caption"]])
        assert torch.equal(got["text_embeds"], cond.embeds[0, cond.mask[0]])
    assert not shards[0]["frame_mask"].all()  # the 3-frame clip was padded ...
    assert shards[0]["token_mask"].tolist() == [True, True, False]  # ... its last tubelet is all padding
    assert shards[len(dataset) - 1]["frame_mask"].tolist() == [True, False, False, False, False]  # the still
    assert set(encoder.calls.values()) == {1}  # each distinct caption encoded once


def test_collate_pads_text_and_feeds_the_model(built):
    _, model, _, _, out = built
    shards = TokenShardDataset(out)
    batch = collate_shards([shards[i] for i in range(4)])
    lengths = [shards[i]["text_embeds"].shape[0] for i in range(4)]
    assert batch["ids"].shape == (4, 3, 2, 2) and batch["frame_mask"].shape == (4, 5)
    assert batch["text_embeds"].shape == (4, max(lengths), SPEC.dim)
    assert batch["text_mask"].sum(1).tolist() == lengths
    for i, n in enumerate(lengths):
        assert torch.equal(batch["text_embeds"][i, :n], shards[i]["text_embeds"])
        assert not batch["text_embeds"][i, n:].any()
    text = TextCondition(batch["text_embeds"], batch["text_mask"])
    loss = model(batch["ids"], text=text, video_frame_mask=batch["frame_mask"],
                 generator=torch.Generator().manual_seed(0)).loss
    assert torch.isfinite(loss)


def test_dataloader_workers(built):
    _, _, _, _, out = built
    shards = TokenShardDataset(out)
    clone = pickle.loads(pickle.dumps(shards))
    assert torch.equal(clone[5]["ids"], shards[5]["ids"])
    batches = list(DataLoader(shards, batch_size=3, num_workers=2, collate_fn=collate_shards))
    assert [b["ids"].shape[0] for b in batches] == [3, 3]
    assert torch.equal(torch.cat([b["ids"] for b in batches]), torch.stack([shards[i]["ids"] for i in range(6)]))


def test_model_mismatch_is_detected(built):
    _, model, _, index, out = built
    with pytest.raises(CheckpointError, match="other tokenizer weights"):
        TokenShardDataset(out, model=build_tiny(seed=1))
    other = build_tiny(cvivit=dataclasses.replace(model.config.cvivit, dim=16))
    with pytest.raises(CheckpointError, match="dim=32 \\(shards\\) vs 16 \\(model\\)"):
        index.check_model(other)
    with pytest.raises(CheckpointError, match="fake-words.*other-encoder"):
        TokenShardDataset(out, model=model, text_spec=TextEncoderSpec("other-encoder", 24))
    with pytest.raises(CheckpointError, match="other-encoder"):
        TokenShardDataset(out, text_spec=TextEncoderSpec("other-encoder", 24))
    half = build_tiny().half()  # an fp16 checkpoint loaded in fp16 or fp32 is the same tokenizer
    assert tokenizer_fingerprint(half) == tokenizer_fingerprint(copy.deepcopy(half).float())
    assert tokenizer_fingerprint(half)["sha256"] != index.tokenizer["sha256"]  # rounding changed the weights
    assert tokenizer_fingerprint(model.cvivit) == tokenizer_fingerprint(model)


def test_corrupt_or_foreign_folders(built, tmp_path):
    _, _, _, _, out = built
    with pytest.raises(CheckpointError, match="no index.json"):
        TokenShardDataset(tmp_path / "clips")
    index_text = (out / "index.json").read_text()
    data = json.loads(index_text)

    (out / "index.json").write_text("{broken", encoding="utf-8")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        read_index(out)
    for change in ({"format": "something-else"}, {"format_version": 99}, {"num_items": 7},
                   {"token_shape": [3, 2]}, {"shards": []}, {"tokenizer": {"sha256": "x"}}):
        (out / "index.json").write_text(json.dumps({**data, **change}), encoding="utf-8")
        with pytest.raises(CheckpointError):
            read_index(out)
    (out / "index.json").write_text(index_text, encoding="utf-8")

    shard = out / "shard_00001.safetensors"
    original = shard.read_bytes()
    shard.write_bytes(original[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        TokenShardDataset(out)
    flipped = bytearray(original)
    flipped[-1] ^= 0xFF
    shard.write_bytes(bytes(flipped))
    TokenShardDataset(out)  # same size: only verify=True reads every byte
    with pytest.raises(CheckpointError, match="sha256"):
        TokenShardDataset(out, verify=True)
    shard.write_bytes(b"\x00" * len(original))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        TokenShardDataset(out)
    shard.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        TokenShardDataset(out)


def test_overwrite_rules(built, tmp_path):
    dataset, model, _, _, out = built
    with pytest.raises(ConfigError, match="overwrite=True"):
        precompute_shards(dataset, model, FakeEncoder(), out, progress=False)
    index = precompute_shards(dataset, model, FakeEncoder(), out, shard_size=8, max_items=3, overwrite=True,
                              progress=False)
    assert index.num_items == 3 and sorted(p.name for p in out.iterdir()) == ["index.json",
                                                                              "shard_00000.safetensors"]
    assert len(TokenShardDataset(out, model=model)) == 3


def test_argument_errors(built, tmp_path):
    dataset, model, _, _, _ = built

    class NoSpec:
        def encode(self, prompts, device=None):
            return FakeEncoder().encode(prompts)

    with pytest.raises(ConfigError, match="text_spec"):
        precompute_shards(dataset, model, NoSpec(), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="384-d"):
        precompute_shards(dataset, model, NoSpec(), tmp_path / "a", text_spec=TextEncoderSpec("big", 384),
                          progress=False)
    with pytest.raises(ConfigError, match="text-conditioned"):
        precompute_shards(dataset, model, None, tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="shard_size"):
        precompute_shards(dataset, model, FakeEncoder(), tmp_path / "a", shard_size=0, progress=False)
    with pytest.raises(ConfigError, match="Phenaki model or a CViViT"):
        precompute_shards(dataset, object(), FakeEncoder(), tmp_path / "a", progress=False)
    big = VideoFolderDataset(dataset.root, dataclasses.replace(dataset.config, image_size=16))
    with pytest.raises(InputError, match="16x16"):
        precompute_shards(big, model, FakeEncoder(), tmp_path / "b", progress=False)
    assert not (tmp_path / "b" / "index.json").exists()


def test_tokenizer_only_shards_and_model_state_untouched(built, tmp_path):
    dataset, model, _, _, _ = built
    model.train()
    index = precompute_shards(dataset, model.cvivit, None, tmp_path / "plain", batch_size=4, progress=False)
    assert model.training and model.cvivit.training  # mode restored
    assert index.text_encoder is None and index.text_dim is None
    shards = TokenShardDataset(tmp_path / "plain", model=model)
    assert "text_embeds" not in shards[0]
    batch = collate_shards([shards[i] for i in range(len(shards))])
    assert "text_mask" not in batch and batch["ids"].shape[0] == len(dataset)
    with pytest.raises(CheckpointError, match="no text embeddings"):
        TokenShardDataset(tmp_path / "plain", model=model, text_spec=SPEC)


def test_token_frame_mask():
    mask = torch.tensor([[True, True, True, True, False, False, False],
                         [True, False, False, False, False, False, False]])
    assert token_frame_mask(mask, 2).tolist() == [[True, True, True, False], [True, False, False, False]]
    assert token_frame_mask(mask[:, :1], 2).tolist() == [[True], [True]]

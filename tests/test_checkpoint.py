"""Bundles: bit-exact round trip, strict loading, clear failures, no pickles."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from phenaki_core import (CheckpointError, MINILM_SPEC, SamplerConfig, TextEncoderSpec, load_bundle, sample_ids,
                          save_bundle)
from phenaki_core.checkpoint import read_metadata

from helpers import build_tiny, random_text

TINY_TEXT = TextEncoderSpec("test-encoder", 24, "ab" * 32)


@pytest.fixture
def saved(tmp_path):
    model = build_tiny()
    path = save_bundle(tmp_path / "tiny.safetensors", model, TINY_TEXT, extra={"steps": 12})
    return model, path


def test_round_trip_is_bit_exact(saved):
    model, path = saved
    bundle = load_bundle(path)
    original, loaded = model.state_dict(), bundle.model.state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)
    assert bundle.model.config == model.config
    assert bundle.text_encoder == TINY_TEXT
    assert bundle.extra == {"steps": 12}
    cfg = SamplerConfig(steps=3)
    a = sample_ids(model, random_text(1), num_frames=5, sampler=cfg, generator=torch.Generator().manual_seed(0))
    b = sample_ids(bundle.model, random_text(1), num_frames=5, sampler=cfg, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_self_critic_bundle_has_no_duplicate_tensors(tmp_path):
    from phenaki_core import CriticConfig
    model = build_tiny(critic=CriticConfig(kind="self"))
    path = save_bundle(tmp_path / "self.safetensors", model, TINY_TEXT)
    keys = load_file(str(path)).keys()
    assert "critic.to_pred.weight" in keys and not any(k.startswith("critic.maskgit") for k in keys)
    assert torch.equal(load_bundle(path).model.critic.to_pred.weight, model.critic.to_pred.weight)


def test_half_precision_save_and_dtype_on_load(saved, tmp_path):
    model, _ = saved
    path = save_bundle(tmp_path / "half.safetensors", model, TINY_TEXT, dtype=torch.float16)
    bundle = load_bundle(path, dtype="bf16")
    assert bundle.model.maskgit.to_logits.weight.dtype == torch.bfloat16
    assert os.path.getsize(path) < os.path.getsize(tmp_path / "tiny.safetensors")


def rewrite(path, tensors=None, metadata=None, drop=(), add=None):
    tensors = dict(load_file(str(path))) if tensors is None else tensors
    for key in drop:
        tensors.pop(key)
    tensors.update(add or {})
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata())
    meta.update(metadata or {})
    save_file(tensors, str(path), metadata={k: v for k, v in meta.items() if v is not None})


def test_truncated_file(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_bundle(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_bundle(path)


@pytest.mark.parametrize("metadata, match", [
    ({"format": "something-else"}, "not a Phenaki bundle"),
    ({"format_version": "99"}, "format version"),
    ({"config": "{broken"}, "not valid JSON"),
    ({"config": json.dumps({"maskgit": {"num_tokens": 8}})}, "num_tokens"),
    ({"text_encoder": json.dumps({"name": "x"})}, "invalid text encoder"),
    ({"config": None}, "no 'config'"),
])
def test_wrong_or_missing_metadata(saved, metadata, match):
    _, path = saved
    tensors = dict(load_file(str(path)))
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata())
    meta.update(metadata)
    save_file(tensors, str(path), metadata={k: v for k, v in meta.items() if v is not None})
    with pytest.raises(CheckpointError, match=match):
        load_bundle(path)


def test_plain_safetensors_without_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a Phenaki bundle"):
        load_bundle(path)


def test_missing_extra_and_misshaped_tensors(saved):
    _, path = saved
    rewrite(path, drop=["maskgit.to_logits.bias"])
    with pytest.raises(CheckpointError, match="missing tensors.*maskgit.to_logits.bias"):
        load_bundle(path)
    rewrite(path, add={"maskgit.to_logits.bias": torch.zeros(64), "stowaway": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected tensors.*stowaway"):
        load_bundle(path)
    rewrite(path, drop=["stowaway"], add={"maskgit.to_logits.bias": torch.zeros(65)})
    with pytest.raises(CheckpointError, match=r"shape \(65,\)"):
        load_bundle(path)


def test_text_encoder_mismatch_names_both(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="test-encoder.*all-MiniLM-L6-v2"):
        load_bundle(path, expected_text_encoder=MINILM_SPEC)


def test_pickle_files_are_refused_and_never_opened(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="pickle.*phenaki convert"):
        load_bundle(path)


def test_missing_path_and_wrong_suffix(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_bundle(tmp_path / "nope.safetensors")
    (tmp_path / "x.onnx").write_bytes(b"0")
    with pytest.raises(CheckpointError, match="not a .safetensors"):
        load_bundle(tmp_path / "x.onnx")


def test_save_is_atomic_and_refuses_wrong_suffix(saved, tmp_path):
    model, path = saved
    before = path.read_bytes()

    class Boom(RuntimeError):
        pass

    import phenaki_core.checkpoint as ckpt
    original = ckpt.save_file

    def failing(state, filename, metadata=None):
        original(state, filename, metadata=metadata)
        raise Boom("disk full")

    ckpt.save_file = failing
    try:
        with pytest.raises(Boom):
            save_bundle(path, model, TINY_TEXT, extra={"steps": 99})
    finally:
        ckpt.save_file = original
    assert path.read_bytes() == before, "a failed save must leave the previous file untouched"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"], "no temporary file is left behind"
    with pytest.raises(CheckpointError, match=".safetensors"):
        save_bundle(tmp_path / "x.pt", model, TINY_TEXT)


def test_read_metadata_does_not_need_the_tensors(saved):
    model, path = saved
    config, text, extra = read_metadata(path)
    assert config == model.config and text == TINY_TEXT and extra == {"steps": 12}


def test_a_write_killed_midway_is_cleaned_up_by_the_next_one(saved, tmp_path):
    """A SIGKILLed writer leaves its private temporary directory; the next save removes it, but not a live one's."""
    model, path = saved
    dead = tmp_path / f".{path.name}.999999999.abc123.tmp"  # beyond any pid_max: no such process
    dead.mkdir()
    (dead / ".tmpXyZ123").write_bytes(b"half a file")
    alive = tmp_path / f".{path.name}.1.def456.tmp"  # pid 1 always runs: maybe writing right now
    alive.mkdir()
    save_bundle(path, model, TINY_TEXT)
    names = sorted(p.name for p in tmp_path.iterdir())
    if os.name == "posix":
        assert names == sorted([path.name, alive.name])
    assert load_bundle(path).model.config == model.config


def test_written_bundles_are_ordinary_readable_files(tmp_path):
    import stat
    from phenaki_core.checkpoint import atomic_write
    target = tmp_path / "out.bin"
    atomic_write(target, lambda tmp: (open(tmp, "wb").write(b"x"), os.chmod(tmp, 0o600)))
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    os.chmod(target, 0o664)
    atomic_write(target, lambda tmp: open(tmp, "wb").write(b"y"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o664 and target.read_bytes() == b"y"


def test_a_bundle_replaced_while_it_loads_is_read_whole_from_one_file(tmp_path):
    """A training run renames a new bundle over the old one at any moment; a reader must get one
    file or the other, never one file's header with the other's tensors (their headers differ in
    length, so mixing them shifts every tensor)."""
    import threading
    versions = []
    for seed, note in ((0, ""), (1, "x" * 999)):
        path = save_bundle(tmp_path / f"v{seed}.safetensors", build_tiny(seed), TINY_TEXT, extra={"note": note})
        versions.append((path.read_bytes(), build_tiny(seed).state_dict()))
    target = tmp_path / "live.safetensors"
    target.write_bytes(versions[0][0])
    stop = threading.Event()

    def trainer():
        i = 0
        while not stop.is_set():
            i += 1
            tmp = tmp_path / f"tmp{i % 2}.safetensors"
            tmp.write_bytes(versions[i % 2][0])
            os.replace(tmp, target)

    writer = threading.Thread(target=trainer)
    writer.start()
    try:
        for _ in range(60):
            state = load_bundle(target).model.state_dict()
            assert any(all(torch.equal(state[k], ref[k]) for k in ref) for _, ref in versions), "a mixed read"
    finally:
        stop.set()
        writer.join()

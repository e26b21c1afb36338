"""Fixtures shared by several test modules (plain helper functions are in helpers.py)."""

import socket

import pytest

from helpers import build_tiny, encode_text, load_model, pack_parts, sample_scene, save_tiny_bundle


@pytest.fixture
def tiny():
    return build_tiny()


@pytest.fixture(scope="session")
def minilm():
    """The default text encoder, loaded once."""
    from phenaki_core import load_minilm
    return load_minilm()


@pytest.fixture
def no_network(monkeypatch):
    """Every way of reaching the network raises and is recorded (code that catches the error is still caught)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network access attempted in a test")

    class NoSocket(socket.socket):
        def __init__(self, family=-1, *args, **kwargs):
            if family in (socket.AF_INET, socket.AF_INET6, -1):
                refuse("socket", family)
            super().__init__(family, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "socket", NoSocket)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)  # offline by construction, not by environment
    yield attempts
    assert attempts == [], f"network access attempted: {attempts}"


# --- the ComfyUI nodes on a tiny model (test_nodes, test_bad_inputs_nodes, test_hygiene) -------------
@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A folder the loader lists (like models/phenaki): tiny.safetensors, sub/other.safetensors (another
    seed) and two files it must not list."""
    folder = tmp_path_factory.mktemp("phenaki_models")
    save_tiny_bundle(folder / "tiny.safetensors")
    (folder / "sub").mkdir()
    save_tiny_bundle(folder / "sub" / "other.safetensors", seed=1)
    (folder / "old.pt").write_bytes(b"not listed")
    (folder / "notes.txt").write_text("not listed")
    pack_parts()[3].add_model_folder(folder)
    return folder


@pytest.fixture(scope="session")
def model(model_dir):
    """tiny.safetensors through Load Phenaki (cpu, fp32): 8x8 frames, at most 17, MiniLM text."""
    return load_model("tiny.safetensors", "cpu", "fp32")


@pytest.fixture(scope="session")
def cond(model):
    return encode_text(model, "a red circle moving right", "")


@pytest.fixture(scope="session")
def scene9(model, cond):
    """A 9-frame scene to prime from."""
    return sample_scene(model, cond, frames=9, seed=1)


@pytest.fixture
def no_load(monkeypatch):
    """Bringing the model to its device (ComfyUI: onto the GPU) fails the test: for inputs that must be
    refused before that. ``no_load.undo()`` lifts it."""
    monkeypatch.setattr(pack_parts()[2], "ready", lambda *m: pytest.fail("the model was loaded for a bad input"))
    return monkeypatch

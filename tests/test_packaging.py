"""Registry-ready packaging: a licence, [tool.comfy] metadata, and a registry archive that ships
what users need and nothing of the development tree (tests, benchmarks, docs, scripts)."""

from __future__ import annotations

import fnmatch
import re
import subprocess

import pytest

from helpers import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

NEEDED = ["__init__.py", "nodes/__init__.py", "nodes/phenaki_nodes.py", "nodes/example_clips/phenaki_example_clip.gif",
          "phenaki_core/__init__.py", "phenaki_core/weights/shapes64.safetensors", "requirements.txt",
          "pyproject.toml", "README.md", "LICENSE"]
LEFT_OUT = ["tests/", "bench/", "docs/", "scripts/", ".ci/"]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_mit_licence():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
    assert "MIT" in pyproject()["project"]["license"]["text"]


def test_tool_comfy_names_publisher_icon_and_comfyui_version():
    comfy = pyproject()["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    icon = comfy["Icon"]
    assert icon.startswith("https://") and icon.endswith((".png", ".jpg", ".svg", ".gif"))
    repo = pyproject()["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{repo}/main/"
    assert icon.startswith(prefix) and (ROOT / icon.removeprefix(prefix)).is_file(), icon
    assert re.fullmatch(r">=\s*\d+\.\d+\.\d+", comfy["requires-comfyui"])


def test_requirements_leave_torch_to_comfyui_and_pyproject_installs_everything():
    def names(lines):
        return {re.split(r"[<>=~!\[ ;]", line.strip(), maxsplit=1)[0].lower() for line in lines
                if line.strip() and not line.strip().startswith("#")}

    requirements = names((ROOT / "requirements.txt").read_text().splitlines())
    dependencies = names(pyproject()["project"]["dependencies"])
    assert "torch" not in requirements and "torch" in dependencies
    assert requirements == dependencies - {"torch"}  # pip install -e . gets the same, plus torch


def ignored(path: str, patterns: list[str]) -> bool:
    """gitignore-style matching for the patterns .comfyignore uses: /dir/, dir/ and file globs."""
    folders = path.split("/")[:-1]
    for pattern in patterns:
        if pattern.endswith("/"):  # a folder: anchored (/tests/) at the root, else at any depth
            name = pattern.strip("/")
            if (folders[:1] == [name]) if pattern.startswith("/") else any(fnmatch.fnmatch(f, name) for f in folders):
                return True
        elif fnmatch.fnmatch(path if "/" in pattern else path.rsplit("/", 1)[-1], pattern.lstrip("/")):
            return True
    return False


def test_a_registry_install_ships_what_users_need_only():
    """comfy node publish archives the git-tracked files minus .comfyignore."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    patterns = [line.strip() for line in (ROOT / ".comfyignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    shipped = {path for path in tracked.stdout.splitlines() if not ignored(path, patterns)}
    for path in NEEDED:
        assert path in shipped or not (ROOT / path).exists(), f"{path} is left out of a registry install"
    assert not [p for p in shipped if p.startswith(tuple(LEFT_OUT))]
    assert any(p.startswith("example_workflows/") and p.endswith(".json") for p in shipped)

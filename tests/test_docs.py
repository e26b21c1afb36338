"""The repository stands alone: its docs and code point only at files it contains."""

import re
import subprocess

import pytest

from helpers import ROOT

OUTSIDE = re.compile(r"SHAPES_WORLD\.md|PEER\.md|GPU_PERF\.md|DESIGN\.md|\.\./shared")


def tracked_text_files():
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not names:
        pytest.skip("not a git checkout")
    for name in names:
        if name.endswith((".py", ".md", ".sh", ".toml", ".txt", ".json", ".yaml", ".yml")):
            path = ROOT / name
            if path.is_file():
                yield name, path.read_text(encoding="utf-8", errors="replace")


def test_no_file_points_at_documents_outside_the_repository():
    offenders = [f"{name}: {m.group(0)}" for name, text in tracked_text_files() for m in OUTSIDE.finditer(text)
                 if name != "tests/test_docs.py"]
    assert not offenders, offenders


def test_relative_links_in_the_docs_resolve():
    broken = []
    for name, text in tracked_text_files():
        if not name.endswith(".md"):
            continue
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not ((ROOT / name).parent / target).exists():
                broken.append(f"{name} -> {target}")
    assert not broken, broken

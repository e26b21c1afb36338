"""The direction of imports (docs/architecture.md), read from the source with ``ast``.

Every import counts: module level, inside functions (lazy imports), and
``importlib.import_module("...")`` with a constant name.

* The model modules (configs, layers, kernels, tokenizer, quantizer, transformer, the bundle and
  its text condition) never import the sampling loop (sampling, guided, cuda_graphs, pipeline),
  training, data, evaluation, the CLI or the ComfyUI nodes: the model is a set of forward passes
  that everything else drives.
* ``sampling`` is the loop alone: it imports no model module.
* Nothing in ``phenaki_core`` imports ComfyUI or the pack's ``nodes`` package.
* In ``nodes/``, only ``comfy_adapter`` imports ComfyUI, and the pack's own code is imported
  relatively (ComfyUI has a top-level module called ``nodes``).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from helpers import ROOT

CORE = "phenaki_core"
MODEL = {"config", "layers", "kernels", "cvivit", "quantizer", "maskgit", "phenaki", "text_condition"}
SAMPLING_LOOP = {"sampling", "guided", "guided_model", "cuda_graphs", "pipeline"}
NOT_FOR_THE_MODEL = SAMPLING_LOOP | {"training", "data", "evaluation", "cli", "nodes"}
COMFY = {"comfy", "comfy_extras", "comfy_api", "folder_paths", "server", "latent_preview"}
OUTSIDE = "<outside>"  # a relative import that climbs above the package it starts in


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    """``phenaki_core/data/shards.py`` -> ("phenaki_core.data.shards", False); packages -> True."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def imports_of(path: Path, root: Path) -> list[tuple[int, str, bool]]:
    """(line, absolute module name, written relatively) for every import in ``path``, relative ones
    resolved against ``root``; a name that climbs above the top package starts with ``<outside>``."""
    name, is_package = module_name(path, root)
    package = name.split(".") if is_package else name.split(".")[:-1]
    found: list[tuple[int, str, bool]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, False) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1
                base = package[:len(package) - up] if up <= len(package) else []
                if up >= len(package):
                    base = [OUTSIDE]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            relative = bool(node.level)
            found.append((node.lineno, base, relative))
            if node.module is None:  # ``from . import x``: x may be a module
                found += [(node.lineno, f"{base}.{alias.name}", relative) for alias in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value, False))
    return found


def sources(root: Path, package: str) -> list[Path]:
    return sorted((root / package).rglob("*.py"))


def within(target: str, package: str) -> str | None:
    """The first component of ``target`` below ``package`` (``phenaki_core.data.shards`` -> ``data``)."""
    prefix = package + "."
    return target[len(prefix):].split(".")[0] if target.startswith(prefix) else None


def first(target: str) -> str:
    parts = target.split(".")
    return parts[1] if parts[0] == OUTSIDE and len(parts) > 1 else parts[0]


def violations(root: Path) -> list[str]:
    """Every broken rule under ``root`` (a folder holding ``phenaki_core`` and optionally ``nodes``)."""
    found = []
    for path in sources(root, CORE):
        name, _ = module_name(path, root)
        here = within(name, CORE)
        where = path.relative_to(root)
        for line, target, _ in imports_of(path, root):
            inside = within(target, CORE)
            if here in MODEL and inside in NOT_FOR_THE_MODEL:
                found.append(f"{where}:{line}: model module imports {target} (the model never drives sampling, "
                             f"training, data, evaluation, the CLI or the nodes)")
            if here == "sampling" and inside in MODEL:
                found.append(f"{where}:{line}: the sampling loop imports the model module {target}")
            if first(target) in COMFY or first(target) == "nodes":
                found.append(f"{where}:{line}: phenaki_core imports {target} (ComfyUI or the pack's nodes)")
    if (root / "nodes").is_dir():
        for path in sources(root, "nodes"):
            where = path.relative_to(root)
            for line, target, relative in imports_of(path, root):
                if first(target) in COMFY and path.name != "comfy_adapter.py":
                    found.append(f"{where}:{line}: imports {target}; only comfy_adapter.py imports ComfyUI")
                if not relative and target.split(".")[0] in ("nodes", CORE):
                    found.append(f"{where}:{line}: imports {target} absolutely; the pack imports itself relatively")
    return found


def test_the_repository_keeps_its_import_rules():
    assert violations(ROOT) == []


def import_cycle(root: Path) -> list[str]:
    """One cycle among the modules of ``phenaki_core`` (lazy imports too), as a list of names; []."""
    graph: dict[str, set[str]] = {}
    for path in sources(root, CORE):
        name, _ = module_name(path, root)
        graph.setdefault(name, set())
        for _, target, _ in imports_of(path, root):
            if target.startswith(CORE + ".") and target != name:
                graph[name].add(target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt in graph and not state.get(nxt) and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if not state.get(node) and (cycle := visit(node)):
            return cycle
    return []


def test_the_core_has_no_import_cycle():
    """A cycle means two modules are one part in two files (``guided`` <-> ``cuda_graphs`` was one:
    ``GuidedModel`` moved to ``guided_model``, which both import)."""
    assert import_cycle(ROOT) == []


def test_the_cycle_check_finds_one(tmp_path):
    write(tmp_path, "phenaki_core/a.py", "def f():\n    from .b import g\n")
    write(tmp_path, "phenaki_core/b.py", "from .a import f\n")
    assert import_cycle(tmp_path) == ["phenaki_core.a", "phenaki_core.b", "phenaki_core.a"]


def test_the_model_modules_all_exist():
    """A renamed module would silently drop out of the rules."""
    names = {path.stem for path in (ROOT / CORE).glob("*.py")} | {p.name for p in (ROOT / CORE).iterdir() if p.is_dir()}
    assert MODEL | SAMPLING_LOOP | {"training", "data", "evaluation", "cli"} <= names


def write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(root).parents:
        if str(parent) != "." and not (root / parent / "__init__.py").exists():
            (root / parent / "__init__.py").write_text("")
    path.write_text(source)


@pytest.mark.parametrize("relative, source, message", [
    ("phenaki_core/phenaki.py", "def sample(self):\n    from .guided import sample_ids\n",
     "phenaki.py:2: model module imports phenaki_core.guided"),
    ("phenaki_core/maskgit.py", "import phenaki_core.training.trainer\n",
     "model module imports phenaki_core.training.trainer"),
    ("phenaki_core/cvivit.py", "from . import pipeline\n", "model module imports phenaki_core.pipeline"),
    ("phenaki_core/config.py", "import importlib\nimportlib.import_module('phenaki_core.data')\n",
     "model module imports phenaki_core.data"),
    ("phenaki_core/sampling.py", "from .maskgit import MaskGit\n", "the sampling loop imports the model module"),
    ("phenaki_core/pipeline.py", "def f():\n    import comfy.model_management\n", "imports comfy.model_management"),
    ("phenaki_core/data/shards.py", "from ...nodes import glue\n", "imports <outside>.nodes"),
    ("phenaki_core/cli.py", "import folder_paths\n", "imports folder_paths"),
    ("nodes/glue.py", "def f():\n    import comfy.utils\n", "only comfy_adapter.py imports ComfyUI"),
    ("nodes/glue.py", "from phenaki_core import Phenaki\n", "the pack imports itself relatively"),
])
def test_the_checker_catches_a_violation(tmp_path, relative, source, message):
    write(tmp_path, relative, source)
    write(tmp_path, "phenaki_core/pipeline.py" if relative != "phenaki_core/pipeline.py" else "phenaki_core/x.py",
          "from .guided import sample_ids\nfrom .phenaki import Phenaki\n")  # allowed: the pipeline drives the model
    found = violations(tmp_path)
    assert len(found) == 1 and message in found[0], found


def test_the_pack_never_prints_and_nodes_is_never_shadowed():
    """nodes/ logs instead of printing; importing the pack never puts its nodes/ at ComfyUI's ``nodes``."""
    for path in [ROOT / "__init__.py", *sources(ROOT, "nodes")]:
        assert not re.search(r"^\s*print\(", path.read_text(), re.M), f"{path.name} prints"
    assert "nodes" not in sys.modules or not str(getattr(sys.modules["nodes"], "__file__", "")).startswith(str(ROOT))


def test_tests_reach_other_modules_through_public_names_only():
    """No test imports or touches a leading-underscore name of another module: what a test needs is
    public, with a real name, or tested through the public API."""
    found = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            found += [f"{path.name}:{node.lineno}: {name}" for name in names
                      if name.startswith("_") and not (name.startswith("__") and name.endswith("__"))]
    assert found == []
